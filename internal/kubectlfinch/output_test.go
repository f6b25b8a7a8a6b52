package kubectlfinch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/kubectlfinch"
)

// labelled sets a label on a new connection.
func labelled(key, value string) func(*finchv1.FinchConnection) {
	return func(c *finchv1.FinchConnection) { c.Labels = map[string]string{key: value} }
}

// lines is the output's non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// rowOf is the whitespace-separated fields of the line whose field i is v.
func rowOf(t *testing.T, out string, i int, v string) []string {
	t.Helper()
	for _, l := range lines(out) {
		if f := strings.Fields(l); len(f) > i && f[i] == v {
			return f
		}
	}
	t.Fatalf("no row with %q in column %d:\n%s", v, i, out)
	return nil
}

// TestOutputFormats runs every -o format on each read verb (get, get NAME,
// funnel, status) against real objects, and checks what a user scripting
// against kubectl would rely on.
func TestOutputFormats(t *testing.T) {
	w := newWorld(t)
	acme := w.newConn("acme", "acme-001", labelled("team", "payroll"))
	w.newConn("globex", "globex-001", labelled("team", "hr"))
	const group = "finch.connectops.dev"

	// get: the list.
	r := w.ok("get", "-o", "name")
	if want := "finchconnection." + group + "/acme\nfinchconnection." + group + "/globex\n"; r.stdout != want {
		t.Errorf("get -o name:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = w.ok("get", "-o", "wide")
	contains(t, "get -o wide", lines(r.stdout)[0], "NAME", "CUSTOMER", "APP", "PHASE", "REASON", "CONNECTION",
		"PROVIDER", "SESSION", "AGE", "NEXT", "CONNECT URL")
	if row := rowOf(t, r.stdout, 0, "acme"); row[2] != "default" || row[3] != "AwaitingConnect" || row[4] != finchv1.ReasonAwaitingEmployer ||
		row[len(row)-1] != acme.Status.Session.ConnectURL {
		t.Errorf("get -o wide: acme row %q, want app default, AwaitingConnect, reason %s, the Connect URL last",
			row, finchv1.ReasonAwaitingEmployer)
	}
	r = w.ok("get", "-o", "jsonpath={.items[*].spec.customerID}")
	if r.stdout != "acme-001 globex-001" {
		t.Errorf("get -o jsonpath: %q", r.stdout)
	}
	r = w.ok("get", "-o", "jsonpath", "--template", `{range .items[*]}{.metadata.name}={.status.phase};{end}`)
	if r.stdout != "acme=AwaitingConnect;globex=AwaitingConnect;" {
		t.Errorf("get -o jsonpath --template: %q", r.stdout)
	}
	cols := filepath.Join(t.TempDir(), "columns")
	if err := os.WriteFile(cols, []byte("NAME   PHASE\n.metadata.name   {.status.phase}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = w.ok("get", "-o", "custom-columns-file="+cols)
	if got := strings.Join(strings.Fields(r.stdout), " "); got != "NAME PHASE acme AwaitingConnect globex AwaitingConnect" {
		t.Errorf("get -o custom-columns-file:\n%s", r.stdout)
	}
	r = w.ok("get", "-o", "custom-columns=NAME:.metadata.name,CUSTOMER:.spec.customerID,TEAM:.metadata.labels.team")
	if got := strings.Join(strings.Fields(r.stdout), " "); got != "NAME CUSTOMER TEAM acme acme-001 payroll globex globex-001 hr" {
		t.Errorf("get -o custom-columns:\n%s", r.stdout)
	}
	r = w.ok("get", "-o", "custom-columns=NAME:.metadata.name", "--no-headers")
	if r.stdout != "acme\nglobex\n" {
		t.Errorf("get -o custom-columns --no-headers: %q", r.stdout)
	}
	if r = w.ok("get", "--no-headers"); len(lines(r.stdout)) != 2 || strings.Contains(r.stdout, "CUSTOMER") {
		t.Errorf("get --no-headers:\n%s", r.stdout)
	}
	r = w.ok("get", "-o", "yaml")
	var list finchv1.FinchConnectionList
	if err := yaml.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("get -o yaml: %v", err)
	}
	if len(list.Items) != 2 || list.Items[1].Name != "globex" || list.Items[1].Kind != "FinchConnection" || strings.Contains(r.stdout, "managedFields") {
		t.Errorf("get -o yaml: %d items, managedFields shown: %v", len(list.Items), strings.Contains(r.stdout, "managedFields"))
	}

	// get NAME: the object.
	if r = w.ok("get", "acme", "-o", "name"); r.stdout != "finchconnection."+group+"/acme\n" {
		t.Errorf("get acme -o name: %q", r.stdout)
	}
	if r = w.ok("get", "acme", "-o", "jsonpath={.spec.customerID}"); r.stdout != "acme-001" {
		t.Errorf("get acme -o jsonpath: %q", r.stdout)
	}

	// funnel: each app, with its counts.
	if r = w.ok("funnel", "-o", "name"); r.stdout != "finchapp."+group+"/default\n" {
		t.Errorf("funnel -o name: %q", r.stdout)
	}
	r = w.ok("funnel", "-o", "wide")
	contains(t, "funnel -o wide", lines(r.stdout)[0], "NAMESPACE", "KIND", "NAME", "TOTAL", "MEDIAN TTC", "CONNECTED %")
	if got := strings.Join(rowOf(t, r.stdout, 2, "default"), " "); got != w.Namespace+" FinchApp default 2 2 0 0 0 0 0 - 0%" {
		t.Errorf("funnel -o wide row %q", got)
	}
	if r = w.ok("funnel", "-o", "jsonpath={.items[0].kind} {.items[0].funnel.total} {.items[0].funnel.awaiting}"); r.stdout != "FinchApp 2 2" {
		t.Errorf("funnel -o jsonpath: %q", r.stdout)
	}
	r = w.ok("funnel", "-o", "custom-columns=APP:.metadata.name,TOTAL:.funnel.total,CONNECTED:.funnel.connected")
	if got := strings.Join(strings.Fields(r.stdout), " "); got != "APP TOTAL CONNECTED default 2 0" {
		t.Errorf("funnel -o custom-columns:\n%s", r.stdout)
	}
	r = w.ok("funnel", "-o", "yaml")
	var funnels funnelList
	if err := yaml.Unmarshal([]byte(r.stdout), &funnels); err != nil {
		t.Fatalf("funnel -o yaml: %v", err)
	}
	if f := funnels.Items; funnels.Kind != "List" || len(f) != 1 || f[0].APIVersion != finchv1.GroupVersion.String() ||
		f[0].Metadata.Namespace != w.Namespace || f[0].Funnel.Total != 2 {
		t.Errorf("funnel -o yaml: %+v", funnels)
	}

	// status: the FinchConnection itself; wide, the explanation with every Event.
	r = w.ok("status", "acme", "-o", "json")
	var conn finchv1.FinchConnection
	if err := json.Unmarshal([]byte(r.stdout), &conn); err != nil {
		t.Fatalf("status -o json: %v", err)
	}
	if conn.Kind != "FinchConnection" || conn.Spec.CustomerID != "acme-001" || conn.Status.Session == nil {
		t.Errorf("status -o json: %s %q", conn.Kind, conn.Spec.CustomerID)
	}
	contains(t, "status -o yaml", w.ok("status", "acme", "-o", "yaml").stdout, "kind: FinchConnection", "customerID: acme-001")
	if r = w.ok("status", "acme", "-o", "name"); r.stdout != "finchconnection."+group+"/acme\n" {
		t.Errorf("status -o name: %q", r.stdout)
	}
	if r = w.ok("status", "acme", "-o", "jsonpath={.status.phase}"); r.stdout != "AwaitingConnect" {
		t.Errorf("status -o jsonpath: %q", r.stdout)
	}
	r = w.ok("status", "acme", "-o", "custom-columns=PHASE:.status.phase,URL:.status.session.connectURL")
	if got := strings.Join(strings.Fields(r.stdout), " "); got != "PHASE URL AwaitingConnect "+acme.Status.Session.ConnectURL {
		t.Errorf("status -o custom-columns:\n%s", r.stdout)
	}
	contains(t, "status -o wide", w.ok("status", "acme", "-o", "wide").stdout, "FinchConnection "+w.Namespace+"/acme",
		"Recent events:", finchv1.ReasonSessionCreated, "Next step:")

	// A format no printer knows: an error that lists them, and no output.
	for _, args := range [][]string{{"get", "-o", "bogus"}, {"funnel", "-o", "bogus"}, {"status", "acme", "-o", "bogus"}} {
		r = w.plugin("", args...)
		if r.err == nil || r.stdout != "" || !strings.Contains(r.err.Error(), `unknown output format "bogus"`) ||
			!strings.Contains(r.err.Error(), "jsonpath") || !strings.Contains(r.err.Error(), "custom-columns") {
			t.Errorf("%s: stdout %q, err %v", strings.Join(args, " "), r.stdout, r.err)
		}
	}
}

// TestSelector filters get, funnel and resync --all by label, as kubectl -l does.
func TestSelector(t *testing.T) {
	w := newWorld(t)
	w.newConn("acme", "acme-001", labelled("team", "payroll"))
	w.newConn("globex", "globex-001", labelled("team", "hr"))
	w.newConn("initech", "initech-001")

	if r := w.ok("get", "-l", "team=payroll", "-o", "name"); r.stdout != "finchconnection.finch.connectops.dev/acme\n" {
		t.Errorf("get -l team=payroll -o name: %q", r.stdout)
	}
	r := w.ok("get", "--selector", "team")
	if got := len(lines(r.stdout)); got != 3 || strings.Contains(r.stdout, "initech") {
		t.Errorf("get --selector team: %d lines, want a header, acme and globex:\n%s", got, r.stdout)
	}
	r = w.ok("get", "-l", "team=nobody")
	contains(t, "get -l team=nobody (stderr)", r.stderr, "No FinchConnections found in namespace "+w.Namespace+" matching team=nobody")
	if r.stdout != "" {
		t.Errorf("get -l team=nobody printed %q", r.stdout)
	}
	if r = w.ok("funnel", "-l", "team in (payroll,hr)", "-o", "jsonpath={.items[0].funnel.total}"); r.stdout != "2" {
		t.Errorf("funnel -l 'team in (payroll,hr)': total %q, want 2", r.stdout)
	}
	if r = w.ok("funnel", "-l", "team=nobody", "-o", "name"); r.stdout != "" {
		t.Errorf("funnel -l team=nobody lists %q, want no app", r.stdout)
	}
	r = w.ok("resync", "--all", "-l", "team=hr")
	contains(t, "resync --all -l team=hr", r.stdout, "resync requested for 1 FinchConnections")
	if w.get("globex").Annotations[finchv1.RequestedAtAnnotation] == "" || w.get("acme").Annotations[finchv1.RequestedAtAnnotation] != "" {
		t.Error("resync --all -l team=hr did not annotate exactly globex")
	}
	if r = w.plugin("", "get", "-l", "team in (hr"); r.err == nil || !strings.Contains(r.err.Error(), "--selector") {
		t.Errorf("get -l with a bad selector: %v", r.err)
	}
}

// syncBuffer is an output buffer a running command writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestGetWatch runs get --watch while a connection goes from AwaitingConnect
// to Connected: the table, then a row for the change, until interrupted.
func TestGetWatch(t *testing.T) {
	g := NewWithT(t)
	w := newWorld(t)
	acme := w.newConn("acme", "acme-001")
	w.newConn("other", "other-001", labelled("team", "hr"))

	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := kubectlfinch.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs([]string{"--kubeconfig", env.Kubeconfig, "-n", w.Namespace, "get", "--watch", "-l", "!team"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

	g.Eventually(out.String, timeout).Should(MatchRegexp(`(?m)^NAME +CUSTOMER +PHASE.*\nacme +acme-001 +AwaitingConnect `))

	code := w.complete(acme)
	if r := w.plugin(code, "handoff", "acme", "--code-file", "-"); r.err != nil {
		t.Fatal(r.err)
	}
	g.Eventually(out.String, timeout).Should(MatchRegexp(`(?m)^acme +acme-001 +Connected +\S+ `))
	cancel()
	g.Eventually(done, timeout).Should(Receive(BeNil()))

	got := out.String()
	seen := map[string]bool{}
	for _, l := range lines(got) {
		if seen[l] {
			t.Errorf("a row printed twice (a status write that changed no column):\n%s", l)
		}
		seen[l] = true
	}
	if n := strings.Count(got, "NAME"); n != 1 {
		t.Errorf("the header printed %d times:\n%s", n, got)
	}
	if strings.Contains(got, "other") {
		t.Errorf("-l !team printed the labelled connection:\n%s", got)
	}
	t.Logf("get --watch printed:\n%s%s", got, errOut.String())
}
