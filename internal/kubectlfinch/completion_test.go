package kubectlfinch_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/connectops/finch-operator/internal/testenv"
)

// completions is what `kubectl finch __complete ARGS` offers (the shells'
// protocol: one candidate a line, then :DIRECTIVE).
func (w *world) completions(args ...string) []string {
	w.t.Helper()
	r := w.ok(append([]string{"__complete"}, args...)...)
	var out []string
	for _, l := range lines(r.stdout) {
		if !strings.HasPrefix(l, ":") {
			out = append(out, strings.SplitN(l, "\t", 2)[0])
		}
	}
	return out
}

func sameWords(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s completes %q, want %q", what, got, want)
	}
}

// TestCompletion completes names from the cluster: connections in the -n
// namespace for every verb that takes one, apps for --app, namespaces for
// -n, the -o formats and the completion shells.
func TestCompletion(t *testing.T) {
	w := newWorld(t)
	w.newConn("acme", "acme-001")
	w.newConn("globex", "globex-001")
	other := newWorld(t)
	other.newConn("initech", "initech-001")

	for _, verb := range []string{"get", "status", "link", "reauth", "resync", "suspend", "resume", "handoff", "adopt"} {
		sameWords(t, verb, w.completions(verb, ""), "acme", "globex")
	}
	sameWords(t, "status g", w.completions("status", "g"), "globex")
	sameWords(t, "status acme (a second NAME)", w.completions("status", "acme", ""))
	// -n selects the namespace whose connections are offered.
	sameWords(t, "-n OTHER status", w.completions("-n", other.Namespace, "status", ""), "initech")

	cluster := w.newClusterApp()
	apps := w.completions("get", "--app", "")
	if !contains1(apps, "ClusterFinchApp/"+cluster.Name) || !contains1(apps, "default") {
		t.Errorf("get --app completes %q, want default and ClusterFinchApp/%s", apps, cluster.Name)
	}
	sameWords(t, "funnel --app d", w.completions("funnel", "--app", "d"), "default")

	if ns := w.completions("get", "-n", "live-"); !contains1(ns, w.Namespace) || !contains1(ns, other.Namespace) || contains1(ns, "default") {
		t.Errorf("-n live- completes %q, want the live- namespaces only", ns)
	}
	for _, args := range [][]string{{"get", "-o", ""}, {"funnel", "-o", ""}, {"status", "acme", "-o", ""}} {
		formats := w.completions(args...)
		for _, want := range []string{"wide", "json", "yaml", "name", "jsonpath", "custom-columns"} {
			if !contains1(formats, want) {
				t.Errorf("%s completes %q, lacking %s", strings.Join(args, " "), formats, want)
			}
		}
	}
	sameWords(t, "completion", w.completions("completion", ""), "bash", "zsh", "fish", "powershell")
}

func contains1(words []string, w string) bool {
	for _, x := range words {
		if x == w {
			return true
		}
	}
	return false
}

// TestCompletionScripts: completion is listed in the help, and prints each
// shell's script, which completes kubectl-finch through its __complete.
func TestCompletionScripts(t *testing.T) {
	w := newWorld(t)
	if r := w.ok("--help"); !regexp.MustCompile(`(?m)^  completion +Print the shell completion script`).MatchString(r.stdout) {
		t.Errorf("kubectl finch --help does not list completion:\n%s", r.stdout)
	}
	for shell, want := range map[string]string{
		"bash":       "__start_kubectl-finch",
		"zsh":        "#compdef kubectl-finch",
		"fish":       "complete -c kubectl-finch",
		"powershell": "Register-ArgumentCompleter -CommandName 'kubectl-finch'",
	} {
		r := w.ok("completion", shell)
		contains(t, "completion "+shell, r.stdout, want, "__complete")
	}
	if r := w.plugin("", "completion", "tcsh"); r.err == nil {
		t.Error("completion tcsh succeeded")
	}
}

// TestKubectlCompletesThroughShim is the path a kubectl user's TAB takes:
// kubectl's completion (kubectl __complete finch ...) runs
// plugins/kubectl_complete-finch from PATH, which asks the plugin.
func TestKubectlCompletesThroughShim(t *testing.T) {
	w := newWorld(t)
	w.newConn("acme", "acme-001")
	w.newConn("globex", "globex-001")
	kubectl := kubectlBinary(t)
	bin := buildPlugin(t)
	shim, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "plugins", "kubectl_complete-finch"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "kubectl_complete-finch"), shim, 0o755); err != nil {
		t.Fatal(err)
	}
	// The shim calls `kubectl`: the same one the user runs.
	if err := os.Symlink(kubectl, filepath.Join(bin, "kubectl")); err != nil {
		t.Fatal(err)
	}
	complete := func(args ...string) string {
		cmd := exec.Command(kubectl, append([]string{"__complete", "finch"}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+env.Kubeconfig)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("kubectl __complete finch %s: %v", strings.Join(args, " "), err)
		}
		t.Logf("$ kubectl __complete finch %s\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	if got := complete("-n", w.Namespace, "status", ""); !strings.HasPrefix(got, "acme\nglobex\n:4\n") {
		t.Errorf("kubectl __complete finch -n NS status '': %q, want acme, globex and directive 4 (no files)", got)
	}
	contains(t, "kubectl __complete finch ''", complete(""), "get", "funnel", "status", "completion")
}
