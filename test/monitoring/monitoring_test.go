// Package monitoring checks the operator's alerting rules
// (config/prometheus/finch-operator.rules.yaml) and Grafana dashboard
// (config/grafana/finch-operator-dashboard.json): promtool validates and
// unit-tests the rules and parses every dashboard query, every runbook link
// names a section of docs/metrics.md, and every metric they use is one that a
// running manager exports. docs/metrics.md lists exactly the metrics the
// manager registers.
package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/pkg/finchsim"
	"github.com/connectops/finch-operator/test/live"
)

var (
	root          = testenv.RepoRoot()
	promtool      = filepath.Join(root, "bin", "promtool")
	rulesFile     = filepath.Join(root, "config", "prometheus", "finch-operator.rules.yaml")
	rulesTestFile = filepath.Join(root, "test", "monitoring", "testdata", "finch-operator.rules.test.yaml")
	dashboardFile = filepath.Join(root, "config", "grafana", "finch-operator-dashboard.json")
)

// timeout is generous for a busy 2-core machine.
const timeout = 90 * time.Second

// requirePromtool fails (never skips) without bin/promtool: the rules must be tested.
func requirePromtool(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(promtool); err != nil {
		t.Fatalf("%s not found: run `make promtool` (hack/promtool.sh builds it from the Go module proxy)", promtool)
	}
}

func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type rulesDoc struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t *testing.T) rulesDoc {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc rulesDoc
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return doc
}

// query is one PromQL expression of the dashboard, and where it is.
type query struct{ where, expr string }

// labelValues matches a Grafana variable query label_values(metric, label).
var labelValues = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)

func dashboardQueries(t *testing.T) (queries []query, variableMetrics []string) {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string            `json:"uid"`
		Title      string            `json:"title"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("dashboard uid %q, title %q: both are needed for provisioning", dash.UID, dash.Title)
	}
	type panel struct {
		Title      string            `json:"title"`
		Type       string            `json:"type"`
		Panels     []json.RawMessage `json:"panels"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	}
	var walk func([]json.RawMessage)
	walk = func(raws []json.RawMessage) {
		for _, r := range raws {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("panel: %v", err)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use the ${datasource} variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				queries = append(queries, query{fmt.Sprintf("panel %q query %s", p.Title, tg.RefID), tg.Expr})
			}
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // older dashboards keep a plain string
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
			continue
		}
		variableMetrics = append(variableMetrics, m[1])
	}
	return queries, variableMetrics
}

func TestMetricNamesOfAnExpression(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (app, le) (rate(finch_api_budget_wait_seconds_bucket{app=~"a|b", le="1"}[5m]))`:                    "finch_api_budget_wait_seconds_bucket",
		`a_total unless on (x) group_left(y) b offset 10m > bool 0`:                                                "a_total b",
		`absent(up{job="x"}) or vector(0)`:                                                                         "up",
		`histogram_quantile(0.9, sum(rate(x_bucket[1h:5m])) by (le)) * 1e3`:                                        "x_bucket",
		`clamp_min(max(finch_api_ip_penalty_until_timestamp_seconds) - time(), 0) # comment with metric_like_word`: "finch_api_ip_penalty_until_timestamp_seconds",
		"count without (instance) (m{name=\"sum(\\\"q\\\")\"})":                                                    "m",
	} {
		if got := strings.Join(MetricNames(expr), " "); got != want {
			t.Errorf("MetricNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

func TestAlertingRules(t *testing.T) {
	requirePromtool(t)
	t.Log(runPromtool(t, root, "check", "rules", "--lint=all", "--lint-fatal", rulesFile))
	t.Log(runPromtool(t, filepath.Dir(rulesTestFile), "test", "rules", filepath.Base(rulesTestFile)))

	// Every alert has the labels and annotations the README and Alertmanager routes rely on.
	doc := readRules(t)
	tested, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if r.Labels["severity"] == "" {
				t.Errorf("alert %s has no severity label", r.Alert)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, a)
				}
			}
			if !strings.Contains(string(tested), "alertname: "+r.Alert+"\n") {
				t.Errorf("alert %s has no promtool unit test in %s", r.Alert, filepath.Base(rulesTestFile))
			}
		}
	}
	if n == 0 {
		t.Fatal("no alerts in " + rulesFile)
	}
}

// TestRunbooksExist checks that every runbook_url points at a section of
// docs/metrics.md, on GitHub.
func TestRunbooksExist(t *testing.T) {
	doc, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "#") {
			anchors[githubAnchor(strings.TrimLeft(line, "# "))] = true
		}
	}
	const base = "https://github.com/connectops/finch-operator/blob/main/docs/metrics.md#"
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			url := r.Annotations["runbook_url"]
			if r.Alert == "" {
				continue
			}
			if !strings.HasPrefix(url, base) {
				t.Errorf("alert %s: runbook_url %q is not a section of docs/metrics.md (%s...)", r.Alert, url, base)
				continue
			}
			if a := strings.TrimPrefix(url, base); a != strings.ToLower(r.Alert) || !anchors[a] {
				t.Errorf("alert %s: docs/metrics.md has no section #%s named after the alert", r.Alert, a)
			}
		}
	}
}

// githubAnchor is the id GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// TestDashboardQueriesParse runs every dashboard query, its Grafana variables
// replaced, through promtool as a recording rule.
func TestDashboardQueriesParse(t *testing.T) {
	requirePromtool(t)
	queries, _ := dashboardQueries(t)
	if len(queries) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for i, q := range queries {
		if strings.Contains(grafanaVariables.Replace(q.expr), "$") {
			t.Errorf("%s uses a variable the test does not know: %s", q.where, q.expr)
		}
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: grafanaVariables.Replace(q.expr)})
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	raw, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard.rules.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "rules", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		var index strings.Builder
		for i, q := range queries {
			fmt.Fprintf(&index, "  dashboard:query_%d = %s: %s\n", i, q.where, q.expr)
		}
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s\nqueries:\n%s", err, out, index.String())
	}
}

// TestMetricsAreExported scrapes a manager that has done the work that
// gives its vector metrics series (sessions, an embedded hand-off, a retried
// Finch error, a reauthentication), and checks that every metric the rules
// and the dashboard name is among them.
func TestMetricsAreExported(t *testing.T) {
	logf.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	env, err := live.Start()
	if err != nil {
		t.Fatalf("start the operator on envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	ctx := context.Background()
	w, err := env.NewWorld(ctx, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	c := env.Client

	// One Finch 500: retried in the client (finch_api_retries_total).
	w.Sim.InjectFault(finch.EndpointCreateSession, finchsim.Fault{Status: http.StatusInternalServerError})
	conn := w.Connection("acme", "acme-001")
	if err := c.Create(ctx, conn); err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, cond func(*finchv1.FinchConnection) bool) *finchv1.FinchConnection {
		t.Helper()
		got := &finchv1.FinchConnection{}
		if err := live.Poll(ctx, timeout, func() (bool, error) {
			if err := c.Get(ctx, client.ObjectKeyFromObject(conn), got); err != nil {
				return false, err
			}
			return cond(got), nil
		}); err != nil {
			t.Fatalf("acme: %s: %v (status %+v)", what, err, got.Status)
		}
		return got
	}
	got := waitFor("a Connect session", func(c *finchv1.FinchConnection) bool { return c.Status.Session != nil })
	// The employer connects; the code comes back the embedded way.
	code, err := w.Sim.CompleteSession(got.Status.Session.ID, finchsim.Completion{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "acme-code-", Namespace: w.Namespace, Labels: map[string]string{finchv1.ConnectionLabel: "acme"}},
		Type:       finchv1.CodeSecretType, StringData: map[string]string{finchv1.CodeKey: code},
	}); err != nil {
		t.Fatal(err)
	}
	waitFor("Connected", func(c *finchv1.FinchConnection) bool { return c.Status.Phase == finchv1.PhaseConnected })
	// A reauthentication.
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"annotations":{"`+finchv1.ReauthRequestedAtAnnotation+`":"1"}}}`))
	if err := c.Patch(ctx, conn, patch); err != nil {
		t.Fatal(err)
	}
	waitFor("a reauthentication session", func(c *finchv1.FinchConnection) bool {
		return c.Status.Session != nil && c.Status.Session.Kind == finchv1.SessionReauthenticate
	})

	// What the rules and the dashboard name.
	used := map[string][]string{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			for _, m := range MetricNames(r.Expr) {
				used[m] = append(used[m], "alert "+r.Alert)
			}
		}
	}
	queries, variableMetrics := dashboardQueries(t)
	for _, q := range queries {
		for _, m := range MetricNames(grafanaVariables.Replace(q.expr)) {
			used[m] = append(used[m], "dashboard "+q.where)
		}
	}
	for _, m := range variableMetrics {
		used[m] = append(used[m], "dashboard variable")
	}

	// What the manager exports, once every used name has shown up (the
	// manager records some series right after the status write we saw).
	var families map[string]*dto.MetricFamily
	var missing []string
	err = live.Poll(ctx, timeout, func() (bool, error) {
		if families, err = scrape(env.MetricsURL); err != nil {
			return false, err
		}
		missing = missing[:0]
		for m := range used {
			if !exported(families, m) {
				missing = append(missing, m)
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		sort.Strings(missing)
		for _, m := range missing {
			t.Errorf("%s is not exported by the manager (used by %s)", m, strings.Join(used[m], "; "))
		}
		var names []string
		for n := range families {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Logf("the manager exports: %s", strings.Join(names, " "))
	}
	var names []string
	for m := range used {
		names = append(names, m)
	}
	sort.Strings(names)
	t.Logf("metrics used by the rules and the dashboard: %s", strings.Join(names, " "))
}

// exported says whether name is a family of the scrape, or the _bucket, _sum
// or _count series of a histogram (or summary) family.
func exported(families map[string]*dto.MetricFamily, name string) bool {
	if mf, ok := families[name]; ok && len(mf.GetMetric()) > 0 {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		mf, ok := families[base]
		if !ok || len(mf.GetMetric()) == 0 {
			continue
		}
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			return true
		case dto.MetricType_SUMMARY:
			return suffix != "_bucket"
		}
	}
	return false
}

func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url) //nolint:noctx // a loopback test endpoint
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return families, nil
}
