package install_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The alerting rules and the Grafana dashboard live once, under config/
// (test/monitoring checks their content); these tests check that every way
// of installing them renders that content unchanged.

var (
	rulesSource     = filepath.Join(root, "config", "prometheus", "finch-operator.rules.yaml")
	dashboardSource = filepath.Join(root, "config", "grafana", "finch-operator-dashboard.json")
)

const syncFix = "run ./hack/sync-monitoring.sh (make manifests runs it)"

// rulesSpec is the rules file as a PrometheusRule's spec.
func rulesSpec(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(rulesSource)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := yaml.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	return spec
}

func dashboard(t *testing.T) any {
	t.Helper()
	raw, err := os.ReadFile(dashboardSource)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardSource, err)
	}
	return d
}

// checkDashboardConfigMap checks a ConfigMap carries the dashboard for Grafana's sidecar.
func checkDashboardConfigMap(t *testing.T, cm *unstructured.Unstructured) {
	t.Helper()
	if got := cm.GetLabels()["grafana_dashboard"]; got != "1" {
		t.Errorf("ConfigMap %s: label grafana_dashboard=%q, want \"1\" (Grafana's sidecar selects it)", cm.GetName(), got)
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	if len(data) != 1 {
		t.Fatalf("ConfigMap %s has keys %v, want one dashboard", cm.GetName(), reflect.ValueOf(data).MapKeys())
	}
	var got any
	if err := json.Unmarshal([]byte(data["finch-operator.json"]), &got); err != nil {
		t.Fatalf("ConfigMap %s: finch-operator.json is not JSON: %v", cm.GetName(), err)
	}
	if !reflect.DeepEqual(got, dashboard(t)) {
		t.Errorf("ConfigMap %s: the dashboard differs from %s", cm.GetName(), dashboardSource)
	}
}

func checkPrometheusRule(t *testing.T, what string, pr *unstructured.Unstructured) {
	t.Helper()
	if !reflect.DeepEqual(pr.Object["spec"], rulesSpec(t)) {
		t.Errorf("%s: the PrometheusRule's spec differs from %s: %s", what, rulesSource, syncFix)
	}
}

// checkHonorLabels checks that a ServiceMonitor keeps the operator's
// namespace label: without honorLabels Prometheus renames it
// exported_namespace, and the alerts' namespace label would name the
// operator's namespace instead of the tenant's.
func checkHonorLabels(t *testing.T, what string, sm *unstructured.Unstructured) {
	t.Helper()
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(endpoints) == 0 {
		t.Fatalf("%s: ServiceMonitor has no endpoints", what)
	}
	for _, e := range endpoints {
		if m, _ := e.(map[string]any); m["honorLabels"] != true {
			t.Errorf("%s: ServiceMonitor endpoint %v lacks honorLabels: true", what, e)
		}
	}
}

// testMonitoringCopies fails while a derived copy of the rules or the
// dashboard is stale.
func testMonitoringCopies(t *testing.T) {
	for src, dst := range map[string]string{
		rulesSource:     filepath.Join(chartDir, "files", "monitoring", "finch-operator.rules.yaml"),
		dashboardSource: filepath.Join(chartDir, "files", "monitoring", "finch-operator-dashboard.json"),
	} {
		a, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s is stale or missing: %s", dst, syncFix)
		}
	}
	objs := readObjects(t, filepath.Join(root, "config", "prometheus", "prometheusrule.yaml"))
	checkPrometheusRule(t, "config/prometheus/prometheusrule.yaml", find(t, objs, "PrometheusRule", "controller-manager-alerts"))
}

// testKustomizeMonitoring renders config/prometheus (ServiceMonitor and
// PrometheusRule; their CRDs are not in envtest) and config/grafana, whose
// ConfigMap the API server validates.
func testKustomizeMonitoring(t *testing.T, c *cluster) {
	objs := decode(t, c.run(t, nil, "kustomize", filepath.Join(root, "config", "prometheus")))
	if got := sorted(keys(objs)); !reflect.DeepEqual(got, []string{
		"PrometheusRule/system/controller-manager-alerts", "ServiceMonitor/system/controller-manager-metrics-monitor",
	}) {
		t.Fatalf("config/prometheus renders %v", got)
	}
	checkPrometheusRule(t, "config/prometheus", find(t, objs, "PrometheusRule", "controller-manager-alerts"))
	checkHonorLabels(t, "config/prometheus", find(t, objs, "ServiceMonitor", "controller-manager-metrics-monitor"))

	cms := decode(t, c.run(t, nil, "kustomize", filepath.Join(root, "config", "grafana")))
	if len(cms) != 1 || cms[0].GetKind() != "ConfigMap" {
		t.Fatalf("config/grafana renders %v, want one ConfigMap", keys(cms))
	}
	checkDashboardConfigMap(t, cms[0])
	cms[0].SetNamespace(kustomizeNamespace)
	c.run(t, encode(t, cms), "apply", "--dry-run=server", "-f", "-")
}

// testHelmMonitoring renders the chart's PrometheusRule and dashboard
// ConfigMap (off by default) and validates the ConfigMap on the server.
func testHelmMonitoring(t *testing.T, c *cluster) {
	requireHelm(t)
	for _, o := range helmTemplate(t) {
		if o.GetKind() == "PrometheusRule" || o.GetKind() == "ConfigMap" {
			t.Errorf("%s rendered with default values", key(o))
		}
	}
	objs := helmTemplate(t, "prometheusRule.enabled=true", "prometheusRule.labels.release=kube-prometheus-stack",
		"grafanaDashboard.enabled=true", "grafanaDashboard.annotations.grafana_folder=Finch")
	pr := find(t, objs, "PrometheusRule", helmRelease)
	checkPrometheusRule(t, "the chart", pr)
	if pr.GetLabels()["release"] != "kube-prometheus-stack" || pr.GetNamespace() != helmNamespace {
		t.Errorf("PrometheusRule labels %v, namespace %q", pr.GetLabels(), pr.GetNamespace())
	}
	cm := find(t, objs, "ConfigMap", helmRelease+"-dashboard")
	checkDashboardConfigMap(t, cm)
	if cm.GetAnnotations()["grafana_folder"] != "Finch" {
		t.Errorf("dashboard ConfigMap annotations %v lack grafana_folder", cm.GetAnnotations())
	}
	c.run(t, encode(t, []*unstructured.Unstructured{cm}), "apply", "--dry-run=server", "-f", "-")

	checkHonorLabels(t, "the chart", find(t, helmTemplate(t, "metrics.serviceMonitor.enabled=true"), "ServiceMonitor", helmRelease))

	// The ConfigMap can go to Grafana's namespace.
	objs = helmTemplate(t, "grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring")
	if ns := find(t, objs, "ConfigMap", helmRelease+"-dashboard").GetNamespace(); ns != "monitoring" {
		t.Errorf("dashboard ConfigMap in namespace %q, want monitoring", ns)
	}
}

// testHelmAlertKnobs renders the chart's PrometheusRule with every alert
// knob: a disabled alert is gone, the others carry the extra labels under
// their own (severity kept) and a runbook_url on the given base, and the
// result still passes `promtool check rules`. Without knobs the rules are
// the rules file unchanged (testHelmMonitoring).
func testHelmAlertKnobs(t *testing.T) {
	requireHelm(t)
	spec := rulesSpec(t)
	var alerts []string
	severity := map[string]any{}
	for _, g := range spec["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			rule := r.(map[string]any)
			if name, ok := rule["alert"].(string); ok {
				alerts = append(alerts, name)
				severity[name] = rule["labels"].(map[string]any)["severity"]
			}
		}
	}
	if len(alerts) < 2 {
		t.Fatalf("the rules file has %d alerts", len(alerts))
	}
	off := alerts[1]
	objs := helmTemplate(t, "prometheusRule.enabled=true", "prometheusRule.disabled."+off+"=true",
		"prometheusRule.alertLabels.team=payroll-platform", "prometheusRule.alertLabels.severity=page",
		"prometheusRule.runbookBaseURL=https://wiki.example.com/finch#")
	pr := find(t, objs, "PrometheusRule", helmRelease)
	var got []string
	groups, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups")
	for _, g := range groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			rule := r.(map[string]any)
			name, ok := rule["alert"].(string)
			if !ok {
				continue
			}
			got = append(got, name)
			labels := rule["labels"].(map[string]any)
			if labels["team"] != "payroll-platform" || labels["severity"] != severity[name] {
				t.Errorf("alert %s labels %v, want team=payroll-platform added and its own severity %v kept", name, labels, severity[name])
			}
			if url := rule["annotations"].(map[string]any)["runbook_url"]; url != "https://wiki.example.com/finch#"+strings.ToLower(name) {
				t.Errorf("alert %s runbook_url %v, want the base URL and the alert's anchor", name, url)
			}
		}
	}
	var want []string
	for _, a := range alerts {
		if a != off {
			want = append(want, a)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("alerts %v, want %v (%s disabled)", got, want, off)
	}

	// What Prometheus would load still passes promtool.
	promtool := filepath.Join(root, "bin", "promtool")
	if _, err := os.Stat(promtool); err != nil {
		t.Fatalf("%s not found: run `make promtool`", promtool)
	}
	raw, err := yaml.Marshal(pr.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules on the chart's rules with knobs: %v\n%s", err, out)
	}

	// A disabled alert the rules do not have is a mistake, not a no-op.
	args := []string{"template", helmRelease, chartDir, "--kube-version", kubeVersion, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.disabled.FinchNoSuchAlert=true"}
	if out, err := exec.Command(helmBinary, args...).CombinedOutput(); err == nil || !strings.Contains(string(out), "FinchNoSuchAlert") {
		t.Errorf("prometheusRule.disabled naming an unknown alert: err %v\n%s", err, out)
	}
}
