package finch

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// series returns "name{label=value,...} value" lines for the finch metrics of
// app (its app label), from the controller-runtime registry.
func series(t *testing.T, app string) []string {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "finch_api_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			match := false
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
				match = match || (lp.GetName() == "app" && lp.GetValue() == app)
			}
			if !match {
				continue
			}
			v := m.GetCounter().GetValue()
			if h := m.GetHistogram(); h != nil {
				v = float64(h.GetSampleCount())
			}
			out = append(out, mf.GetName()+"{"+strings.Join(labels, ",")+"} "+strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	// The labels name the app object as kubectl does (kind/name) and its
	// namespace apart, like every business series of the operator.
	const app = "FinchApp/metrics-app"
	key := types.NamespacedName{Namespace: "metrics-ns", Name: "metrics-app"}
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"GET /introspect": sequence(jsonHandler(503, `{}`), jsonHandler(200, `{"connection_id":"c"}`)),
	}}
	c := newTestClient(t, rc, func(c *Config) { c.MetricsApp = key })
	if _, err := c.Introspect(context.Background(), testToken); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(series(t, app), "\n")
	for _, want := range []string{
		`finch_api_requests_total{app=` + app + `,code=503,endpoint=GET /introspect,namespace=metrics-ns} 1`,
		`finch_api_requests_total{app=` + app + `,code=200,endpoint=GET /introspect,namespace=metrics-ns} 1`,
		`finch_api_retries_total{app=` + app + `,endpoint=GET /introspect,namespace=metrics-ns,reason=server_error} 1`,
		`finch_api_request_duration_seconds{app=` + app + `,endpoint=GET /introspect,namespace=metrics-ns} 2`,
		`finch_api_budget_wait_seconds{app=` + app + `,endpoint=GET /introspect,namespace=metrics-ns} 2`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, testToken) || strings.Contains(got, testClientSecret) {
		t.Error("a label carries a secret")
	}
	DeleteAppMetrics(key)
	if left := series(t, app); len(left) != 0 {
		t.Errorf("DeleteAppMetrics left %v", left)
	}
}

func TestAppLabels(t *testing.T) {
	for key, want := range map[types.NamespacedName][2]string{
		{Namespace: "payroll", Name: "acme"}: {"payroll", "FinchApp/acme"},
		{Name: "shared"}:                     {"", "ClusterFinchApp/shared"},
	} {
		if ns, app := AppLabels(key); ns != want[0] || app != want[1] {
			t.Errorf("AppLabels(%v) = %q, %q, want %q, %q", key, ns, app, want[0], want[1])
		}
	}
}
