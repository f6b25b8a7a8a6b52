package kubectlfinch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/kubectlfinch"
	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/pkg/finchsim"
	"github.com/connectops/finch-operator/test/live"
)

// The plugin's commands run in-process against a real API server with the
// operator running (test/live) and the Finch simulator: real objects, real
// Events, real waits for the operator to act.

// timeout is generous: a busy 2-core machine runs several envtest packages at once.
const timeout = 90 * time.Second

var env *live.Env

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	var err error
	if env, err = live.StartOptions(live.Options{Manager: withClusterResourceNamespace, Setup: createClusterResourceNamespace}); err != nil {
		fmt.Fprintln(os.Stderr, "start the operator on envtest:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop:", err)
	}
	os.Exit(code)
}

// world is one test's namespace, simulator and FinchApp.
type world struct {
	*live.World
	t *testing.T
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w, err := env.NewWorld(context.Background(), timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return &world{World: w, t: t}
}

type result struct {
	stdout, stderr string
	err            error
}

// output is everything the command printed, for checks that a secret never appears.
func (r result) output() string { return r.stdout + r.stderr + fmt.Sprint(r.err) }

// plugin runs `kubectl finch ARGS` in the world's namespace.
func (w *world) plugin(stdin string, args ...string) result {
	w.t.Helper()
	var out, errOut bytes.Buffer
	cmd := kubectlfinch.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(append([]string{"--kubeconfig", env.Kubeconfig, "-n", w.Namespace}, args...))
	err := cmd.ExecuteContext(context.Background())
	w.t.Logf("$ kubectl finch %s\n%s%s(err: %v)", strings.Join(args, " "), out.String(), errOut.String(), err)
	return result{out.String(), errOut.String(), err}
}

// ok runs the plugin and fails the test if the command failed.
func (w *world) ok(args ...string) result {
	w.t.Helper()
	r := w.plugin("", args...)
	if r.err != nil {
		w.t.Fatalf("kubectl finch %s: %v\n%s", strings.Join(args, " "), r.err, r.stderr)
	}
	return r
}

func (w *world) create(obj client.Object) {
	w.t.Helper()
	if err := env.Client.Create(context.Background(), obj); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) get(name string) *finchv1.FinchConnection {
	w.t.Helper()
	c := &finchv1.FinchConnection{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: w.Namespace, Name: name}, c); err != nil {
		w.t.Fatal(err)
	}
	return c
}

// waitPhase waits for a final result in phase.
func (w *world) waitPhase(name string, phase finchv1.Phase) *finchv1.FinchConnection {
	w.t.Helper()
	var c *finchv1.FinchConnection
	err := live.Poll(context.Background(), timeout, func() (bool, error) {
		c = &finchv1.FinchConnection{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: w.Namespace, Name: name}, c); err != nil {
			return false, err
		}
		return c.Status.Phase == phase && c.Status.ObservedGeneration == c.Generation, nil
	})
	if err != nil {
		w.t.Fatalf("%s did not reach phase %s (phase %s, conditions %v): %v", name, phase, c.Status.Phase, c.Status.Conditions, err)
	}
	return c
}

// newConn creates a connection and waits for its Connect session.
func (w *world) newConn(name, customer string, mutate ...func(*finchv1.FinchConnection)) *finchv1.FinchConnection {
	w.t.Helper()
	c := w.Connection(name, customer)
	for _, m := range mutate {
		m(c)
	}
	w.create(c)
	return w.waitPhase(name, finchv1.PhaseAwaitingConnect)
}

// complete finishes the connection's published session as the employer and returns the code.
func (w *world) complete(c *finchv1.FinchConnection) string {
	w.t.Helper()
	code, err := w.Sim.CompleteSession(c.Status.Session.ID, finchsim.Completion{})
	if err != nil {
		w.t.Fatal(err)
	}
	return code
}

// connect takes a new connection to Connected through `kubectl finch handoff`.
func (w *world) connect(name, customer string) *finchv1.FinchConnection {
	w.t.Helper()
	code := w.complete(w.newConn(name, customer))
	r := w.plugin(code, "handoff", name, "--code-file", "-", "--wait", "--timeout", timeout.String())
	if r.err != nil {
		w.t.Fatalf("handoff: %v", r.err)
	}
	return w.waitPhase(name, finchv1.PhaseConnected)
}

// tokenFromElsewhere connects a customer outside the operator, as an
// application did before it adopted the operator, and returns the token and
// connection ID.
func (w *world) tokenFromElsewhere(customer string) (string, string) {
	w.t.Helper()
	ctx := context.Background()
	fc, err := finch.New(finch.Config{BaseURL: w.Sim.URL(), ClientID: live.ClientID, ClientSecret: live.ClientSecret})
	if err != nil {
		w.t.Fatal(err)
	}
	sess, err := fc.CreateSession(ctx, finch.SessionRequest{CustomerID: customer, CustomerName: customer, Products: []string{"company", "directory"}})
	if err != nil {
		w.t.Fatal(err)
	}
	code, err := w.Sim.CompleteSession(sess.SessionID, finchsim.Completion{})
	if err != nil {
		w.t.Fatal(err)
	}
	tok, err := fc.ExchangeCode(ctx, finch.TokenRequest{Code: code})
	if err != nil {
		w.t.Fatal(err)
	}
	return tok.AccessToken, tok.ConnectionID
}

// funnelList is what funnel -o json prints: each app, with its funnel.
type funnelList struct {
	Kind  string `json:"kind"`
	Items []struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Funnel kubectlfinch.Funnel `json:"funnel"`
	} `json:"items"`
}

func contains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Errorf("%s lacks %q:\n%s", what, want, got)
		}
	}
}

func TestGetLinkStatusFunnel(t *testing.T) {
	w := newWorld(t)
	acme := w.newConn("acme", "acme-001")
	w.newConn("globex", "globex-001", func(c *finchv1.FinchConnection) { c.Spec.ConnectFlow = finchv1.ConnectFlowEmbedded })

	r := w.ok("get")
	contains(t, "get", r.stdout, "NAME", "CUSTOMER", "PHASE", "CONNECTION", "PROVIDER", "SESSION", "NEXT",
		"acme-001", "AwaitingConnect", "in 13d", "`kubectl finch link acme`", "embedded Connect", "`kubectl finch handoff globex`")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 3 {
		t.Errorf("get prints %d lines, want a header and 2 rows", len(lines))
	}

	r = w.ok("get", "-o", "wide")
	contains(t, "get -o wide", r.stdout, "APP", "CONNECT URL", acme.Status.Session.ConnectURL)

	r = w.ok("get", "-o", "json")
	var list finchv1.FinchConnectionList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("get -o json: %v", err)
	}
	if len(list.Items) != 2 || list.Items[0].Name != "acme" || list.Items[0].Kind != "FinchConnection" {
		t.Errorf("get -o json: %d items, first %s %q", len(list.Items), list.Items[0].Kind, list.Items[0].Name)
	}
	r = w.ok("get", "acme", "-o", "yaml")
	contains(t, "get acme -o yaml", r.stdout, "apiVersion: finch.connectops.dev/v1alpha1", "kind: FinchConnection", "customerID: acme-001")
	if strings.Contains(r.stdout, "managedFields") {
		t.Error("get -o yaml shows managedFields")
	}

	r = w.ok("get", "--app", "other")
	contains(t, "get --app other (stderr)", r.stderr, "No FinchConnections found in namespace "+w.Namespace+" for FinchApp other")

	// link: the URL alone, pipe-friendly.
	r = w.ok("link", "acme")
	if r.stdout != acme.Status.Session.ConnectURL+"\n" {
		t.Errorf("link prints %q, want the Connect URL %q and a newline", r.stdout, acme.Status.Session.ConnectURL)
	}

	r = w.ok("status", "acme")
	contains(t, "status acme", r.stdout, "FinchConnection "+w.Namespace+"/acme", "acme-001 (Customer acme-001)",
		`App:`, `FinchApp "default" (Ready=True)`, "AwaitingConnect", "Connect "+acme.Status.Session.ID, "redirect flow", acme.Status.Session.ConnectURL,
		"acme-finch-token does not exist", "Conditions:", "AwaitingEmployer", "Recent events:", finchv1.ReasonSessionCreated,
		"Next step:", "kubectl finch link acme")

	// globex connects through the embedded flow: handoff --wait.
	code := w.complete(w.get("globex"))
	r = w.plugin(code, "handoff", "globex", "--code-file", "-", "--wait", "--timeout", timeout.String())
	if r.err != nil {
		t.Fatalf("handoff: %v", r.err)
	}
	contains(t, "handoff --wait", r.stdout, "code handed over to globex in Secret globex-code-", "globex: phase Connected", "next step: none")
	if strings.Contains(r.output(), code) {
		t.Error("handoff printed the authorization code")
	}
	globex := w.waitPhase("globex", finchv1.PhaseConnected)

	r = w.ok("status", "globex")
	contains(t, "status globex", r.stdout, "Connected", globex.Status.ConnectionID, "Session:", "none published",
		"globex-finch-token exists (owned by this connection; the token is never shown)", finchv1.ReasonTokenStored)
	r = w.plugin("", "link", "globex")
	if r.err == nil || r.stdout != "" || !strings.Contains(r.err.Error(), "is connected: there is no Connect link to send") {
		t.Errorf("link on a connected connection: stdout %q, err %v; want no output and an error", r.stdout, r.err)
	}

	r = w.ok("funnel")
	contains(t, "funnel", r.stdout, "APP", "TOTAL", "AWAITING", "CONNECTING", "CONNECTED", "REAUTH", "ERROR", "DROP-OFF", "MEDIAN TTC")
	fields := strings.Fields(strings.Split(strings.TrimSpace(r.stdout), "\n")[1])
	if got := strings.Join(fields[:8], " "); got != "default 2 1 0 1 0 0 0" {
		t.Errorf("funnel row %q, want app default: 2 total, 1 awaiting, 1 connected", got)
	}
	r = w.ok("funnel", "-o", "json")
	var funnels funnelList
	if err := json.Unmarshal([]byte(r.stdout), &funnels); err != nil {
		t.Fatalf("funnel -o json: %v", err)
	}
	if f := funnels.Items; len(f) != 1 || f[0].Funnel.Total != 2 || f[0].Funnel.Connected != 1 || f[0].Funnel.MedianTimeToConnectSeconds == nil {
		t.Errorf("funnel -o json: %+v", funnels)
	}
}

func TestNotFound(t *testing.T) {
	w := newWorld(t)
	want := `FinchConnection "nope" not found in namespace "` + w.Namespace + `"`
	for _, args := range [][]string{
		{"get", "nope"}, {"status", "nope"}, {"link", "nope"}, {"reauth", "nope", "--wait"},
		{"resync", "nope"}, {"suspend", "nope"}, {"resume", "nope"}, {"handoff", "nope", "--code", "c0de"},
	} {
		r := w.plugin("", args...)
		if r.err == nil || !strings.Contains(r.err.Error(), want) {
			t.Errorf("kubectl finch %s: error %v, want %q", strings.Join(args, " "), r.err, want)
		}
	}
	// handoff refuses before creating anything.
	list := &corev1.SecretList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(w.Namespace), client.HasLabels{finchv1.ConnectionLabel}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("a command for a missing connection created %d Secrets", len(list.Items))
	}
	if r := w.plugin("", "status"); r.err == nil || !strings.Contains(r.err.Error(), "expected exactly one FinchConnection NAME") {
		t.Errorf("status without NAME: %v", r.err)
	}
}

func TestReauthAndResyncWait(t *testing.T) {
	w := newWorld(t)
	acme := w.connect("acme", "acme-001")
	w.newConn("initech", "initech-001")

	r := w.ok("resync", "acme", "--wait", "--timeout", timeout.String())
	contains(t, "resync --wait", r.stdout, "resync requested for acme", "acme: phase Connected, connection "+acme.Status.ConnectionID)
	if got := w.get("acme").Status.LastHandledReconcileAt; got == "" || got != w.get("acme").Annotations[finchv1.RequestedAtAnnotation] {
		t.Errorf("lastHandledReconcileAt %q does not echo the annotation", got)
	}

	before := w.Sim.Calls(finch.EndpointReauthSession)
	r = w.ok("reauth", "acme", "--wait", "--timeout", timeout.String())
	acme = w.waitPhase("acme", finchv1.PhaseReauthRequired)
	contains(t, "reauth --wait", r.stdout, "reauthentication requested for acme",
		"reauthentication session "+acme.Status.Session.ID+" published for acme (connection "+acme.Status.ConnectionID+")",
		acme.Status.Session.ConnectURL)
	if n := w.Sim.Calls(finch.EndpointReauthSession) - before; n != 1 {
		t.Errorf("reauth made %d reauthenticate calls, want 1", n)
	}
	if r := w.ok("link", "acme"); r.stdout != acme.Status.Session.ConnectURL+"\n" {
		t.Errorf("link after reauth: %q", r.stdout)
	}
	contains(t, "get after reauth", w.ok("get").stdout, "ReauthRequired", "link to re-authenticate")

	r = w.ok("resync", "--all", "--wait", "--timeout", timeout.String())
	contains(t, "resync --all --wait", r.stdout, "resync requested for 2 FinchConnections", "acme", "initech", "NEXT")
	if r := w.plugin("", "resync"); r.err == nil {
		t.Error("resync without NAME or --all succeeded")
	}
}

func TestSuspendResume(t *testing.T) {
	w := newWorld(t)
	w.newConn("acme", "acme-001")

	r := w.ok("suspend", "acme", "--wait", "--timeout", timeout.String())
	contains(t, "suspend --wait", r.stdout, "acme suspended", "acme: phase AwaitingConnect", "next step: suspended")
	c := w.get("acme")
	if !c.Spec.Suspend {
		t.Fatal("spec.suspend is not true")
	}
	if rec := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReconciling); rec == nil || rec.Reason != finchv1.ReasonSuspended {
		t.Errorf("Reconciling %v, want reason Suspended", rec)
	}
	contains(t, "suspend again", w.ok("suspend", "acme").stdout, "acme is already suspended")
	contains(t, "get while suspended", w.ok("get").stdout, "`kubectl finch resume acme`")

	// A request while suspended is recorded, and --wait says why it will not wait.
	r = w.plugin("", "resync", "acme", "--wait")
	if r.err == nil || !strings.Contains(r.err.Error(), "acme is suspended") || !strings.Contains(r.stderr, "after `kubectl finch resume acme`") {
		t.Errorf("resync --wait while suspended: err %v, stderr %q", r.err, r.stderr)
	}

	r = w.ok("resume", "acme", "--wait", "--timeout", timeout.String())
	contains(t, "resume --wait", r.stdout, "acme resumed", "acme: phase AwaitingConnect", "kubectl finch link acme")
	// The request made while suspended is handled after resume.
	if err := live.Poll(context.Background(), timeout, func() (bool, error) {
		c := w.get("acme")
		return c.Status.LastHandledReconcileAt == c.Annotations[finchv1.RequestedAtAnnotation], nil
	}); err != nil {
		t.Errorf("the resync requested while suspended was not handled after resume: %v", err)
	}
	contains(t, "resume again", w.ok("resume", "acme").stdout, "acme is not suspended")
}

func TestAdopt(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()

	// Before the FinchConnection exists (migration).
	token, connID := w.tokenFromElsewhere("legacy-001")
	file := filepath.Join(dir, "legacy.token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sessionsBefore := w.Sim.Calls(finch.EndpointCreateSession)
	r := w.ok("adopt", "legacy", "--token-file", file)
	contains(t, "adopt before the connection", r.stdout, "token stored in Secret "+w.Namespace+"/legacy-finch-token",
		"FinchConnection legacy does not exist yet")
	if strings.Contains(r.output(), token) {
		t.Error("adopt printed the token")
	}
	sec := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: w.Namespace, Name: "legacy-finch-token"}, sec); err != nil {
		t.Fatal(err)
	}
	if string(sec.Data[finchv1.AccessTokenKey]) != token || sec.Labels[finchv1.ConnectionLabel] != "legacy" {
		t.Errorf("token Secret: key %s holds the token: %v; label %q", finchv1.AccessTokenKey,
			string(sec.Data[finchv1.AccessTokenKey]) == token, sec.Labels[finchv1.ConnectionLabel])
	}
	w.create(w.Connection("legacy", "legacy-001"))
	if c := w.waitPhase("legacy", finchv1.PhaseConnected); c.Status.ConnectionID != connID {
		t.Errorf("adopted connection ID %q, want %q", c.Status.ConnectionID, connID)
	}
	if n := w.Sim.Calls(finch.EndpointCreateSession) - sessionsBefore; n != 0 {
		t.Errorf("adopting made %d Connect session calls, want none", n)
	}
	r = w.plugin("", "adopt", "legacy", "--token-file", file)
	if r.err == nil || !strings.Contains(r.err.Error(), "already exists; pass --overwrite") {
		t.Errorf("adopt over an existing Secret: %v", r.err)
	}

	// After the FinchConnection exists, from stdin, waiting for the introspection.
	w.newConn("late", "late-001")
	token, connID = w.tokenFromElsewhere("late-001")
	r = w.plugin(token, "adopt", "late", "--token-file", "-", "--wait", "--timeout", timeout.String())
	if r.err != nil {
		t.Fatalf("adopt --wait: %v", r.err)
	}
	contains(t, "adopt --wait", r.stdout, "late: phase Connected, connection "+connID)
	if strings.Contains(r.output(), token) {
		t.Error("adopt printed the token")
	}

	// A token Finch rejects: the error says so, without the token.
	w.newConn("bogus", "bogus-001")
	r = w.plugin("not-a-finch-token", "adopt", "bogus", "--token-file", "-", "--wait", "--timeout", timeout.String())
	if r.err == nil || !strings.Contains(r.err.Error(), finchv1.ReasonTokenRevoked) || strings.Contains(r.output(), "not-a-finch-token") {
		t.Errorf("adopt of a rejected token: err %v", r.err)
	}
	if r := w.plugin("", "adopt", "x", "--token-file", "-"); r.err == nil || !strings.Contains(r.err.Error(), "the token is empty") {
		t.Errorf("adopt of an empty token: %v", r.err)
	}
}

func TestHandoffRejectedCode(t *testing.T) {
	w := newWorld(t)
	w.newConn("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.ConnectFlow = finchv1.ConnectFlowEmbedded })
	const code = "00000000-0000-0000-0000-00000000dead"
	r := w.plugin("", "handoff", "acme", "--code", code, "--wait", "--timeout", timeout.String())
	if r.err == nil || !strings.Contains(r.err.Error(), "the operator could not use the code: Finch rejected the authorization code") {
		t.Errorf("handoff of a bad code: %v", r.err)
	}
	if strings.Contains(r.output(), code) {
		t.Error("handoff printed the code")
	}
	if r := w.plugin("", "handoff", "acme", "--code", "a", "--code-file", "-"); r.err == nil || !strings.Contains(r.err.Error(), "give the code once") {
		t.Errorf("handoff with two codes: %v", r.err)
	}
}

// TestKubectlRunsThePlugin builds cmd/kubectl-finch and runs it the way users
// do, through kubectl's plugin lookup on PATH: `kubectl finch ...` (kubectl
// finds a plugin only when its name comes before any flag).
func TestKubectlRunsThePlugin(t *testing.T) {
	w := newWorld(t)
	w.newConn("acme", "acme-001")
	kubectl := kubectlBinary(t)
	bin := buildPlugin(t)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(kubectl, append([]string{"finch", "--kubeconfig", env.Kubeconfig, "-n", w.Namespace}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("get")
	if err != nil {
		t.Fatalf("kubectl finch get: %v\n%s", err, out)
	}
	contains(t, "kubectl finch get", out, "acme-001", "AwaitingConnect")
	out, err = run("status", "nope")
	if err == nil || !strings.Contains(out, `error: FinchConnection "nope" not found in namespace "`+w.Namespace+`"`) {
		t.Errorf("kubectl finch status nope: err %v, output:\n%s", err, out)
	}
}

// kubectlBinary is the kubectl beside the envtest binaries, else on PATH.
func kubectlBinary(t *testing.T) string {
	t.Helper()
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(assets, "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		if kubectl, err = exec.LookPath("kubectl"); err != nil {
			t.Fatal("no kubectl beside the envtest binaries nor on PATH: run `make envtest`")
		}
	}
	return kubectl
}

// buildPlugin builds cmd/kubectl-finch into a new directory, for PATH.
func buildPlugin(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "kubectl-finch"), "./cmd/kubectl-finch")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/kubectl-finch: %v\n%s", err, out)
	}
	return bin
}
