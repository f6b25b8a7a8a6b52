package monitoring

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	// The manager's wiring: importing it registers every collector of the
	// operator's packages, as the manager does.
	_ "github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/internal/version"
)

var metricsDoc = filepath.Join(root, "docs", "metrics.md")

// docMetric is a row of the metrics table of docs/metrics.md.
type docMetric struct {
	typ    string
	labels []string // sorted
}

// tableRow matches a row of the metrics table: | `name` | type | labels | meaning |.
var tableRow = regexp.MustCompile("^\\| `(finch_[a-z0-9_]+)` \\| (counter|gauge|histogram|summary) \\|([a-z_, ]*)\\|")

// documentedMetrics reads the metrics table of docs/metrics.md.
func documentedMetrics(t *testing.T) map[string]docMetric {
	t.Helper()
	raw, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]docMetric{}
	for _, line := range strings.Split(string(raw), "\n") {
		m := tableRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if _, dup := out[m[1]]; dup {
			t.Errorf("docs/metrics.md lists %s twice", m[1])
		}
		out[m[1]] = docMetric{typ: m[2], labels: splitLabels(m[3])}
	}
	if len(out) == 0 {
		t.Fatal("docs/metrics.md has no metrics table rows (| `finch_...` | type | labels | meaning |)")
	}
	return out
}

func splitLabels(s string) []string {
	var out []string
	for _, l := range strings.Split(s, ",") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// descRE reads a prometheus.Desc's name and variable labels from its String
// (the only public view of them).
var descRE = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*variableLabels: \{([^}]*)\}\}$`)

// registeredMetrics are the finch_* collectors of the controller-runtime
// registry the manager serves, with their labels, and the types of those
// that have series.
func registeredMetrics(t *testing.T) (labels map[string][]string, types map[string]string) {
	t.Helper()
	// main registers the build info; the packages register the rest in init.
	var already prometheus.AlreadyRegisteredError
	if err := version.RegisterMetric(metrics.Registry); err != nil && !errors.As(err, &already) {
		t.Fatal(err)
	}
	reg, ok := metrics.Registry.(prometheus.Collector)
	if !ok {
		t.Fatalf("the controller-runtime registry (%T) cannot be described", metrics.Registry)
	}
	ch := make(chan *prometheus.Desc, 1024)
	go func() { reg.Describe(ch); close(ch) }()
	labels = map[string][]string{}
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read %s", d)
		}
		if strings.HasPrefix(m[1], "finch_") {
			labels[m[1]] = splitLabels(strings.ReplaceAll(m[2], "c(", ""))
		}
	}
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types = map[string]string{}
	for _, mf := range mfs {
		types[mf.GetName()] = strings.ToLower(mf.GetType().String())
	}
	return labels, types
}

// TestMetricsTable checks that docs/metrics.md lists exactly the finch_*
// metrics the manager registers, with their labels (and type, for those
// with series), and that every name follows the naming scheme.
func TestMetricsTable(t *testing.T) {
	doc := documentedMetrics(t)
	labels, types := registeredMetrics(t)
	for name, l := range labels {
		d, ok := doc[name]
		if !ok {
			t.Errorf("%s (labels %v) is registered but not in the table of docs/metrics.md", name, l)
			continue
		}
		if strings.Join(d.labels, ",") != strings.Join(l, ",") {
			t.Errorf("%s: docs/metrics.md says labels %v, the manager has %v", name, d.labels, l)
		}
		if typ, ok := types[name]; ok && typ != d.typ {
			t.Errorf("%s: docs/metrics.md says %s, the manager exports a %s", name, d.typ, typ)
		}
	}
	for name := range doc {
		if _, ok := labels[name]; !ok {
			t.Errorf("docs/metrics.md lists %s, which the manager does not register", name)
		}
	}
	for name, d := range doc {
		checkName(t, name, d)
	}
}

// checkName applies the Prometheus naming guide
// (https://prometheus.io/docs/practices/naming/) as far as a test can: one
// prefix, counters end in _total and nothing else does, timestamps say so,
// and every business series (anything with an app) has a namespace too.
func checkName(t *testing.T, name string, d docMetric) {
	t.Helper()
	if !strings.HasPrefix(name, "finch_") || strings.HasPrefix(name, "finchconnection_") {
		t.Errorf("%s: the prefix is finch_", name)
	}
	if (d.typ == "counter") != strings.HasSuffix(name, "_total") {
		t.Errorf("%s: a %s; counters, and only counters, end in _total", name, d.typ)
	}
	if strings.Contains(name, "until") || strings.Contains(name, "since") || strings.Contains(name, "oldest") {
		if !strings.HasSuffix(name, "_timestamp_seconds") {
			t.Errorf("%s: a point in time ends in _timestamp_seconds", name)
		}
	}
	has := map[string]bool{}
	for _, l := range d.labels {
		has[l] = true
	}
	if has["app"] != has["namespace"] {
		t.Errorf("%s: labels %v; a series about an app has both namespace and app", name, d.labels)
	}
	if has["connection_namespace"] {
		t.Errorf("%s: the label is namespace, not connection_namespace", name)
	}
}

// tenantMetrics are the documented metrics with namespace and app labels.
func tenantMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for name, d := range documentedMetrics(t) {
		if strings.Contains(","+strings.Join(d.labels, ",")+",", ",app,") {
			out[name] = true
			if d.typ == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					out[name+s] = true
				}
			}
		}
	}
	return out
}

// selectorRE finds a metric name and its label matchers in a PromQL
// expression.
var selectorRE = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?`)

// TestDashboardFiltersEveryPanel checks that the $namespace and $app
// variables filter every selector of a series with namespace and app labels,
// that every other panel says it is operator-wide, and that the reconcile
// panels cover the three controllers.
func TestDashboardFiltersEveryPanel(t *testing.T) {
	tenant := tenantMetrics(t)
	queries, variableMetrics := dashboardQueries(t)
	for _, m := range variableMetrics {
		if !tenant[m] {
			t.Errorf("a dashboard variable takes its values from %s, which has no namespace and app labels", m)
		}
	}
	for _, q := range queries {
		names := MetricNames(grafanaVariables.Replace(q.expr))
		filtered := false
		for _, n := range names {
			if !tenant[n] {
				continue
			}
			filtered = true
			for _, sel := range selectorRE.FindAllStringSubmatch(q.expr, -1) {
				if sel[1] != n {
					continue
				}
				if !strings.Contains(sel[2], `namespace=~"$namespace"`) || !strings.Contains(sel[2], `app=~"$app"`) {
					t.Errorf("%s: %s%s is not filtered by namespace=~\"$namespace\" and app=~\"$app\"", q.where, n, sel[2])
				}
			}
		}
		if !filtered && !strings.Contains(q.where, "operator-wide") {
			t.Errorf("%s: selects %v, which $namespace and $app cannot filter; say operator-wide in its title", q.where, names)
		}
		if strings.Contains(q.expr, "controller_runtime_reconcile") && strings.Contains(q.expr, `controller=~`) ||
			strings.Contains(q.expr, "workqueue_") {
			for _, c := range []string{"finchapp", "clusterfinchapp", "finchconnection"} {
				if !regexp.MustCompile(`[|"]` + c + `[|"]`).MatchString(q.expr) {
					t.Errorf("%s: leaves out the %s controller: %s", q.where, c, q.expr)
				}
			}
		}
	}
}

// operatorWideAlerts are about the whole operator, not a tenant.
var operatorWideAlerts = map[string]bool{"FinchIPPenalty": true, "FinchOperatorAbsent": true}

// TestAlertsCarryTenantLabels checks that every alert about a tenant keeps
// the namespace and app labels (aggregates by both), so that an
// Alertmanager route per namespace needs no label_replace.
func TestAlertsCarryTenantLabels(t *testing.T) {
	byBoth := regexp.MustCompile(`(sum|min|max|count|avg) by \(namespace, app\)`)
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || operatorWideAlerts[r.Alert] {
				continue
			}
			if !byBoth.MatchString(r.Expr) {
				t.Errorf("alert %s does not keep the namespace and app labels (aggregate by (namespace, app)): %s", r.Alert, r.Expr)
			}
			for _, s := range []string{r.Expr, r.Annotations["summary"], r.Annotations["description"]} {
				if strings.Contains(s, "connection_namespace") {
					t.Errorf("alert %s still uses connection_namespace", r.Alert)
				}
			}
			if !strings.Contains(r.Annotations["summary"], "$labels.app") {
				t.Errorf("alert %s: the summary does not name the app", r.Alert)
			}
		}
	}
}
