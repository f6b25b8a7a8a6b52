package kubectlfinch_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/connectops/finch-operator/internal/kubectlfinch"
	"github.com/connectops/finch-operator/internal/testenv"
)

// helpWidth is an 80-column terminal: every help line must fit in it.
const helpWidth = 80

// TestHelpFitsEightyColumns walks the command tree and checks what a user
// reads in a terminal: each command's --help (Long, Examples, the list of
// commands with their Short, the flags), each Short on one line, and the
// flag lists as --help and the generated reference print them.
func TestHelpFitsEightyColumns(t *testing.T) {
	var out bytes.Buffer
	root := kubectlfinch.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &out})
	root.SetOut(&out)
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		path := c.CommandPath()
		check := func(what, text string) {
			for _, line := range strings.Split(text, "\n") {
				if n := utf8.RuneCountInString(line); n > helpWidth {
					t.Errorf("%s: %s line of %d columns:\n%s", path, what, n, line)
				}
			}
		}
		if strings.Contains(c.Short, "\n") {
			t.Errorf("%s: Short spans lines: %q", path, c.Short)
		}
		check("Short", c.Short)
		check("Long", c.Long)
		check("Example", c.Example)
		check("flag usage", kubectlfinch.FlagUsages(c.LocalFlags()))
		check("global flag usage", kubectlfinch.FlagUsages(c.InheritedFlags()))
		out.Reset()
		if err := c.Help(); err != nil {
			t.Fatalf("%s --help: %v", path, err)
		}
		check("--help", out.String())
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				walk(sub)
			}
		}
	}
	walk(root)
}

// TestReferenceIsGenerated checks docs/reference/kubectl-finch against the
// command tree: a changed help text or flag needs `make docs-kubectl-finch`.
func TestReferenceIsGenerated(t *testing.T) {
	committed := filepath.Join(testenv.RepoRoot(), "docs", "reference", "kubectl-finch")
	fresh := t.TempDir()
	root := kubectlfinch.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard})
	if err := kubectlfinch.WriteReference(root, fresh); err != nil {
		t.Fatal(err)
	}
	pages := func(dir string) map[string]string {
		files, err := filepath.Glob(filepath.Join(dir, "*.md"))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out[filepath.Base(f)] = string(b)
		}
		return out
	}
	want, got := pages(fresh), pages(committed)
	if len(want) < 13 {
		t.Fatalf("the reference has %d pages, want one per command", len(want))
	}
	for name, text := range want {
		if got[name] != text {
			t.Errorf("docs/reference/kubectl-finch/%s is stale or missing: run make docs-kubectl-finch", name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("docs/reference/kubectl-finch/%s documents no command: run make docs-kubectl-finch", name)
		}
	}
}
