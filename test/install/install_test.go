// Package install_test checks the installation artifacts against a real API
// server (envtest): the kustomize tree under config/ (with its optional
// components and samples) and the Helm chart under charts/finch-operator
// render, pass server-side validation and admission
// (including the restricted Pod Security Standard), and the chart's RBAC and
// CRDs match what controller-gen generates.
package install_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/connectops/finch-operator/internal/testenv"
)

const (
	kustomizeNamespace = "finch-operator-system"
	helmNamespace      = "finch-operator-helm"
	helmRelease        = "finch-operator"
)

var (
	root       = testenv.RepoRoot()
	chartDir   = filepath.Join(root, "charts", "finch-operator")
	helmBinary = filepath.Join(root, "bin", "helm")
)

// cluster is the envtest control plane shared by the subtests.
type cluster struct {
	kubectl    string
	kubeconfig string
}

func TestInstall(t *testing.T) {
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.Start(env); err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "install-test", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{kubectl: kubectlPath(env), kubeconfig: filepath.Join(t.TempDir(), "kubeconfig")}
	if err := os.WriteFile(c.kubeconfig, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("kustomize config/default", func(t *testing.T) { testKustomizeDefault(t, c) })
	t.Run("kustomize optional components", func(t *testing.T) { testKustomizeOptional(t, c) })
	t.Run("kustomize components: metrics-secure and simulator", func(t *testing.T) { testKustomizeComponents(t, c) })
	t.Run("config/samples: production-shaped, accepted by the API server", func(t *testing.T) { testSamples(t, c) })
	t.Run("kustomize config/namespaced: Roles in the watched namespaces, no cluster-wide grant", func(t *testing.T) { testKustomizeNamespaced(t, c) })
	t.Run("helm chart", func(t *testing.T) { testHelmChart(t, c) })
	t.Run("helm chart: values.schema.json refuses unknown and malformed values", testChartSchema)
	t.Run("helm chart: PDB, NetworkPolicy, topology spread, extraObjects, digest, flags", func(t *testing.T) { testChartAdopterOptions(t, c) })
	t.Run("helm chart: Chart.yaml metadata", testChartMetadata)
	t.Run("helm chart: simulator.enabled runs the Finch simulator and a FinchApp on it", func(t *testing.T) { testChartSimulator(t, c) })
	t.Run("chart CRDs match config/crd/bases", testChartCRDs)
	t.Run("chart ClusterRole matches config/rbac/role.yaml", testChartClusterRole)
	t.Run("chart leader election Role matches config/rbac", testChartLeaderElectionRole)
	t.Run("user roles: chart matches config/rbac, aggregated, no Secrets", testUserRoles)
	t.Run("helm chart, namespaced: Roles in the watched namespaces, no cluster-wide grant", testChartNamespaced)
	t.Run("alerts and dashboard: derived copies are current", testMonitoringCopies)
	t.Run("alerts and dashboard: kustomize", func(t *testing.T) { testKustomizeMonitoring(t, c) })
	t.Run("alerts and dashboard: helm chart", func(t *testing.T) { testHelmMonitoring(t, c) })
	t.Run("alerts: helm chart knobs (disabled, alertLabels, runbookBaseURL)", testHelmAlertKnobs)
}

func testKustomizeDefault(t *testing.T, c *cluster) {
	if !fileExists(filepath.Join(root, "config", "rbac", "role.yaml")) {
		t.Fatal("config/rbac/role.yaml does not exist: run `make manifests` (controller-gen writes it from the +kubebuilder:rbac markers)")
	}
	rendered := c.run(t, nil, "kustomize", filepath.Join(root, "config", "default"))
	objs := decode(t, rendered)

	want := []string{
		"Namespace//finch-operator-system",
		"CustomResourceDefinition//clusterfinchapps.finch.connectops.dev",
		"CustomResourceDefinition//finchapps.finch.connectops.dev",
		"CustomResourceDefinition//finchconnections.finch.connectops.dev",
		"ServiceAccount/finch-operator-system/finch-operator-controller-manager",
		"ClusterRole//finch-operator-manager-role",
		"ClusterRoleBinding//finch-operator-manager-rolebinding",
		"Role/finch-operator-system/finch-operator-leader-election-role",
		"RoleBinding/finch-operator-system/finch-operator-leader-election-rolebinding",
		"ClusterRole//finch-operator-finchapp-editor-role",
		"ClusterRole//finch-operator-finchapp-viewer-role",
		"ClusterRole//finch-operator-finchconnection-editor-role",
		"ClusterRole//finch-operator-finchconnection-viewer-role",
		"ClusterRole//finch-operator-clusterfinchapp-editor-role",
		"ClusterRole//finch-operator-clusterfinchapp-viewer-role",
		"Deployment/finch-operator-system/finch-operator-controller-manager",
		"Service/finch-operator-system/finch-operator-controller-manager-metrics-service",
		"Service/finch-operator-system/finch-operator-controller-manager-inbound",
	}
	if got := keys(objs); !reflect.DeepEqual(sorted(got), sorted(want)) {
		t.Errorf("config/default renders\n  %v\nwant\n  %v", sorted(got), sorted(want))
	}

	dep := find(t, objs, "Deployment", "finch-operator-controller-manager")
	checkDeployment(t, dep, "finch-operator-controller-manager", []string{
		"--leader-elect", "--health-probe-bind-address=:8081", "--metrics-bind-address=:8080", "--inbound-bind-address=:8082",
	})
	checkServicePort(t, find(t, objs, "Service", "finch-operator-controller-manager-metrics-service"), "metrics", 8080)
	checkServicePort(t, find(t, objs, "Service", "finch-operator-controller-manager-inbound"), "inbound", 8082)
	for _, o := range objs {
		if o.GetKind() != "Namespace" && o.GetNamespace() != "" && o.GetNamespace() != kustomizeNamespace {
			t.Errorf("%s is in namespace %q, want %q", key(o), o.GetNamespace(), kustomizeNamespace)
		}
	}

	// Namespaced objects need their namespace to exist for a server-side dry
	// run, so create the Namespace (and only it) for real first.
	var ns, rest []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			ns = append(ns, o)
		} else {
			rest = append(rest, o)
		}
	}
	c.run(t, encode(t, ns), "apply", "-f", "-")
	out := c.run(t, encode(t, rest), "apply", "--dry-run=server", "-f", "-")
	t.Logf("kubectl apply --dry-run=server (config/default):\n%s", out)
}

// testKustomizeNamespaced renders config/namespaced, the namespace-scoped
// install: config/default without the manager's ClusterRole and
// ClusterRoleBinding, with the generated rules (config/rbac/role.yaml) in a
// Role and RoleBinding in each of the example namespaces tenant-a and
// tenant-b, bound to the manager's ServiceAccount, and --watch-namespaces on
// the manager. test/live's TestNamespacedInstallRBAC runs the manager under
// exactly this RBAC.
func testKustomizeNamespaced(t *testing.T, c *cluster) {
	watched := []string{"tenant-a", "tenant-b"}
	objs := decode(t, c.run(t, nil, "kustomize", filepath.Join(root, "config", "namespaced")))
	defaults := decode(t, c.run(t, nil, "kustomize", filepath.Join(root, "config", "default")))
	generated := find(t, readObjects(t, filepath.Join(root, "config", "rbac", "role.yaml")), "ClusterRole", "manager-role")

	// config/default's objects but the manager's ClusterRole and
	// ClusterRoleBinding, plus a Role and RoleBinding per watched namespace.
	var want []string
	for _, k := range keys(defaults) {
		if k != "ClusterRole//finch-operator-manager-role" && k != "ClusterRoleBinding//finch-operator-manager-rolebinding" {
			want = append(want, k)
		}
	}
	for _, ns := range watched {
		want = append(want, "Role/"+ns+"/finch-operator-manager-role", "RoleBinding/"+ns+"/finch-operator-manager-rolebinding")
	}
	// The budget ConfigMaps' Role in the operator's namespace (the cluster
	// resource namespace).
	want = append(want, "Role/"+kustomizeNamespace+"/finch-operator-budget-role", "RoleBinding/"+kustomizeNamespace+"/finch-operator-budget-rolebinding")
	if got := keys(objs); !reflect.DeepEqual(sorted(got), sorted(want)) {
		t.Errorf("config/namespaced renders\n  %v\nwant\n  %v", sorted(got), sorted(want))
	}

	// Nothing cluster-wide for the manager: no ClusterRoleBinding at all, and
	// the only ClusterRoles left (the user roles, bound to no one) grant
	// finch.connectops.dev resources alone, no Secrets.
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRoleBinding":
			t.Errorf("config/namespaced renders %s", key(o))
		case "ClusterRole":
			for g := range grants(t, o) {
				if !strings.HasPrefix(g, "finch.connectops.dev|") {
					t.Errorf("config/namespaced renders %s granting %s", key(o), g)
				}
			}
		}
		if ns := o.GetNamespace(); ns != "" && ns != kustomizeNamespace && !(slices.Contains(watched, ns) && (o.GetKind() == "Role" || o.GetKind() == "RoleBinding")) {
			t.Errorf("config/namespaced renders %s: only the manager's Role and RoleBinding go outside %s", key(o), kustomizeNamespace)
		}
	}

	sa := findIn(t, objs, "ServiceAccount", kustomizeNamespace, "finch-operator-controller-manager")
	for _, ns := range watched {
		role := findIn(t, objs, "Role", ns, "finch-operator-manager-role")
		compareRules(t, "config/namespaced's Role in "+ns, role, "config/rbac/role.yaml (generated)", generated)
		binding := findIn(t, objs, "RoleBinding", ns, "finch-operator-manager-rolebinding")
		ref, _, _ := unstructured.NestedStringMap(binding.Object, "roleRef")
		if ref["kind"] != "Role" || ref["name"] != role.GetName() {
			t.Errorf("RoleBinding in %s refers to %v, want Role %s", ns, ref, role.GetName())
		}
		subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
		wantSubjects := []any{map[string]any{"kind": "ServiceAccount", "name": sa.GetName(), "namespace": sa.GetNamespace()}}
		if !reflect.DeepEqual(subjects, wantSubjects) {
			t.Errorf("RoleBinding in %s binds %v, want the manager's ServiceAccount %v", ns, subjects, wantSubjects)
		}
	}
	checkBudgetRole(t, "config/namespaced", findIn(t, objs, "Role", kustomizeNamespace, "finch-operator-budget-role"),
		findIn(t, objs, "RoleBinding", kustomizeNamespace, "finch-operator-budget-rolebinding"), sa.GetName(), sa.GetNamespace())
	// Leader election stays in the operator's namespace, as in config/default.
	compareRules(t, "config/namespaced's leader election Role",
		findIn(t, objs, "Role", kustomizeNamespace, "finch-operator-leader-election-role"),
		"config/rbac/leader_election_role.yaml", find(t, readObjects(t, filepath.Join(root, "config", "rbac", "leader_election_role.yaml")), "Role", "leader-election-role"))

	dep := find(t, objs, "Deployment", "finch-operator-controller-manager")
	checkDeployment(t, dep, "finch-operator-controller-manager", []string{
		"--leader-elect", "--health-probe-bind-address=:8081", "--metrics-bind-address=:8080", "--inbound-bind-address=:8082",
		"--watch-namespaces=" + strings.Join(watched, ","),
	})
	wantArgs := append(containerArgs(t, find(t, defaults, "Deployment", "finch-operator-controller-manager")), "--watch-namespaces="+strings.Join(watched, ","))
	if args := containerArgs(t, dep); !reflect.DeepEqual(args, wantArgs) {
		t.Errorf("manager args %v, want config/default's and --watch-namespaces: %v", args, wantArgs)
	}

	// The watched namespaces must exist (the overlay does not create them);
	// then the whole install passes a server-side dry run.
	var namespaces, rest []*unstructured.Unstructured
	for _, ns := range watched {
		namespaces = append(namespaces, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns},
		}})
	}
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			namespaces = append(namespaces, o)
		} else {
			rest = append(rest, o)
		}
	}
	c.run(t, encode(t, namespaces), "apply", "-f", "-")
	out := c.run(t, encode(t, rest), "apply", "--dry-run=server", "-f", "-")
	t.Logf("kubectl apply --dry-run=server (config/namespaced):\n%s", out)
}

// testKustomizeOptional renders the opt-in components (ServiceMonitor,
// NetworkPolicies) and validates the NetworkPolicies on the server (the
// ServiceMonitor CRD is not installed in envtest). testKustomizeMonitoring
// covers the rest of config/prometheus and config/grafana.
func testKustomizeOptional(t *testing.T, c *cluster) {
	policies := decode(t, c.run(t, nil, "kustomize", filepath.Join(root, "config", "network-policy")))
	if len(policies) != 3 {
		t.Errorf("config/network-policy renders %d objects, want 3", len(policies))
	}
	for _, p := range policies {
		if p.GetKind() != "NetworkPolicy" {
			t.Errorf("config/network-policy renders a %s", p.GetKind())
		}
		p.SetNamespace(kustomizeNamespace)
	}
	c.run(t, encode(t, policies), "apply", "--dry-run=server", "-f", "-")

	monitors := decode(t, c.run(t, nil, "kustomize", filepath.Join(root, "config", "prometheus")))
	monitor := find(t, monitors, "ServiceMonitor", "controller-manager-metrics-monitor")
	endpoints, _, _ := unstructured.NestedSlice(monitor.Object, "spec", "endpoints")
	if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != "metrics" {
		t.Errorf("ServiceMonitor endpoints %v, want the metrics port", endpoints)
	}
}

func testHelmChart(t *testing.T, c *cluster) {
	requireHelm(t)
	if out, err := exec.Command(helmBinary, "lint", "--strict", "--kube-version", kubeVersion, chartDir).CombinedOutput(); err != nil {
		t.Fatalf("helm lint --strict: %v\n%s", err, out)
	}

	// The namespace a user would install into, with the restricted Pod
	// Security Standard enforced and warned about.
	ns := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": helmNamespace, "labels": map[string]any{
			"pod-security.kubernetes.io/enforce": "restricted",
			"pod-security.kubernetes.io/warn":    "restricted",
		}},
	}}
	c.run(t, encode(t, []*unstructured.Unstructured{ns}), "apply", "-f", "-")

	variants := []struct {
		name string
		set  []string
	}{
		{name: "defaults"},
		{name: "ingress, no metrics, no leader election, no CRDs", set: []string{
			"inbound.ingress.enabled=true", "inbound.ingress.className=nginx", "inbound.ingress.host=finch.example.com",
			"inbound.ingress.tls[0].secretName=finch-tls", "inbound.ingress.tls[0].hosts[0]=finch.example.com",
			"metrics.enabled=false", "leaderElection.enabled=false", "crds.install=false",
			"replicaCount=2", "logLevel=debug", "extraArgs[0]=--zap-devel=false",
		}},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			objs := helmTemplate(t, v.set...)
			for _, o := range objs {
				if o.GetNamespace() != "" && o.GetNamespace() != helmNamespace {
					t.Errorf("%s is in namespace %q, want the release namespace %q", key(o), o.GetNamespace(), helmNamespace)
				}
				if o.GetKind() == "ServiceMonitor" {
					t.Errorf("ServiceMonitor rendered though metrics.serviceMonitor.enabled is false")
				}
			}
			out := c.run(t, encode(t, objs), "apply", "--dry-run=server", "-f", "-")
			t.Logf("kubectl apply --dry-run=server (helm %s):\n%s", v.name, out)
		})
	}

	t.Run("defaults render the expected objects", func(t *testing.T) {
		objs := helmTemplate(t)
		want := []string{
			"CustomResourceDefinition//clusterfinchapps.finch.connectops.dev",
			"CustomResourceDefinition//finchapps.finch.connectops.dev",
			"CustomResourceDefinition//finchconnections.finch.connectops.dev",
			"ServiceAccount/" + helmNamespace + "/finch-operator",
			"ClusterRole//finch-operator-manager",
			"ClusterRoleBinding//finch-operator-manager",
			"ClusterRole//finch-operator-finchapp-editor",
			"ClusterRole//finch-operator-finchapp-viewer",
			"ClusterRole//finch-operator-finchconnection-editor",
			"ClusterRole//finch-operator-finchconnection-viewer",
			"ClusterRole//finch-operator-clusterfinchapp-editor",
			"ClusterRole//finch-operator-clusterfinchapp-viewer",
			"Role/" + helmNamespace + "/finch-operator-leader-election",
			"RoleBinding/" + helmNamespace + "/finch-operator-leader-election",
			// metrics.secure (the default): the manager's TokenReviews and
			// SubjectAccessReviews, and the role a scraper is bound to.
			"ClusterRole//finch-operator-metrics-auth",
			"ClusterRoleBinding//finch-operator-metrics-auth",
			"ClusterRole//finch-operator-metrics-reader",
			"Service/" + helmNamespace + "/finch-operator-metrics",
			"Service/" + helmNamespace + "/finch-operator-inbound",
			"Deployment/" + helmNamespace + "/finch-operator",
		}
		if got := keys(objs); !reflect.DeepEqual(sorted(got), sorted(want)) {
			t.Errorf("chart renders\n  %v\nwant\n  %v", sorted(got), sorted(want))
		}
		checkDeployment(t, find(t, objs, "Deployment", "finch-operator"), "finch-operator", []string{
			"--leader-elect=true", "--leader-election-id=finch-operator.connectops.dev",
			"--leader-election-namespace=" + helmNamespace,
			"--health-probe-bind-address=:8081", "--metrics-bind-address=:8443", "--metrics-secure", "--inbound-bind-address=:8082",
			"--max-concurrent-reconciles=10", "--kube-api-qps=500", "--kube-api-burst=1000", "--callback-require-state=true",
			"--zap-log-level=info", "--zap-encoder=json", "--cluster-resource-namespace=" + helmNamespace,
			"--finch-api-hosts=api.tryfinch.com",
		})
		checkServicePort(t, find(t, objs, "Service", "finch-operator-metrics"), "metrics", 8443)
		checkMetricsRBAC(t, objs)
		for _, crd := range []string{"clusterfinchapps.finch.connectops.dev", "finchapps.finch.connectops.dev", "finchconnections.finch.connectops.dev"} {
			if got := find(t, objs, "CustomResourceDefinition", crd).GetAnnotations()["helm.sh/resource-policy"]; got != "keep" {
				t.Errorf("CRD %s: helm.sh/resource-policy = %q, want keep", crd, got)
			}
		}
	})

	t.Run("optional objects", func(t *testing.T) {
		objs := helmTemplate(t, "metrics.serviceMonitor.enabled=true", "inbound.ingress.enabled=true",
			"metrics.enabled=false", "leaderElection.enabled=false")
		for _, o := range objs {
			if o.GetKind() == "ServiceMonitor" {
				t.Error("ServiceMonitor rendered while metrics.enabled is false")
			}
			if o.GetKind() == "Role" || o.GetKind() == "RoleBinding" {
				t.Errorf("%s rendered while leaderElection.enabled is false", key(o))
			}
			if o.GetKind() == "Service" && strings.HasSuffix(o.GetName(), "-metrics") {
				t.Error("metrics Service rendered while metrics.enabled is false")
			}
		}
		dep := find(t, objs, "Deployment", "finch-operator")
		args := containerArgs(t, dep)
		for _, want := range []string{"--metrics-bind-address=0", "--leader-elect=false"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %v lack %s", args, want)
			}
		}
		ing := find(t, objs, "Ingress", "finch-operator-inbound")
		rules, _, _ := unstructured.NestedSlice(ing.Object, "spec", "rules")
		paths, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "http", "paths")
		var got []string
		for _, p := range paths {
			pm := p.(map[string]any)
			svc, _, _ := unstructured.NestedString(pm, "backend", "service", "name")
			got = append(got, fmt.Sprintf("%s %s -> %s", pm["pathType"], pm["path"], svc))
		}
		want := []string{"Prefix /callback -> finch-operator-inbound", "Prefix /webhooks -> finch-operator-inbound",
			"Prefix /cluster/callback -> finch-operator-inbound", "Prefix /cluster/webhooks -> finch-operator-inbound"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ingress paths %v, want %v", got, want)
		}

		objs = helmTemplate(t, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.interval=30s")
		sm := find(t, objs, "ServiceMonitor", "finch-operator")
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		if sel["app.kubernetes.io/component"] != "metrics" {
			t.Errorf("ServiceMonitor selector %v does not select the metrics Service only", sel)
		}
	})

	// helm install --dry-run=server against the API server renders NOTES.txt and
	// checks the release could be installed (testChartNotes checks what the
	// notes say). envtest installed the CRDs without Helm's ownership
	// metadata, so the chart must not template them here.
	t.Run("helm install --dry-run=server", func(t *testing.T) { testChartNotes(t, c) })
}

// testChartCRDs fails when the chart's copies of the CRDs are stale.
func testChartCRDs(t *testing.T) {
	bases := filepath.Join(root, "config", "crd", "bases")
	copies := filepath.Join(chartDir, "files", "crds")
	want, _ := filepath.Glob(filepath.Join(bases, "*.yaml"))
	got, _ := filepath.Glob(filepath.Join(copies, "*.yaml"))
	if len(want) == 0 {
		t.Fatal("no CRDs in config/crd/bases")
	}
	const fix = "run ./hack/sync-chart-crds.sh after `make manifests`"
	if !reflect.DeepEqual(basenames(want), basenames(got)) {
		t.Fatalf("chart CRDs %v differ from config/crd/bases %v: %s", basenames(got), basenames(want), fix)
	}
	for _, f := range want {
		a, _ := os.ReadFile(f)
		b, err := os.ReadFile(filepath.Join(copies, filepath.Base(f)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("charts/finch-operator/files/crds/%s is stale: %s", filepath.Base(f), fix)
		}
	}

	// The chart templates the copies (fromYaml | toYaml, adding labels and the
	// keep policy); the rendered spec must be the generated one unchanged.
	requireHelm(t)
	rendered := helmTemplate(t)
	for _, f := range want {
		src := readObjects(t, f)[0]
		got := find(t, rendered, "CustomResourceDefinition", src.GetName())
		if !reflect.DeepEqual(got.Object["spec"], src.Object["spec"]) {
			t.Errorf("the chart renders CRD %s with a spec different from %s", src.GetName(), filepath.Base(f))
		}
	}
}

func testChartClusterRole(t *testing.T) {
	path := filepath.Join(root, "config", "rbac", "role.yaml")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		t.Fatal("config/rbac/role.yaml does not exist: run `make manifests` (controller-gen writes it from the +kubebuilder:rbac markers)")
	}
	requireHelm(t)
	generated := find(t, readObjects(t, path), "ClusterRole", "manager-role")
	chart := find(t, helmTemplate(t), "ClusterRole", "finch-operator-manager")
	compareRules(t, "charts/finch-operator/templates/clusterrole.yaml", chart, "config/rbac/role.yaml (generated)", generated)
}

func testChartLeaderElectionRole(t *testing.T) {
	requireHelm(t)
	kustomize := find(t, readObjects(t, filepath.Join(root, "config", "rbac", "leader_election_role.yaml")), "Role", "leader-election-role")
	chart := find(t, helmTemplate(t), "Role", "finch-operator-leader-election")
	compareRules(t, "charts/finch-operator/templates/leader-election-role.yaml", chart, "config/rbac/leader_election_role.yaml", kustomize)
}

// testChartNamespaced renders the chart as a namespace-scoped install: the
// manager's rules (the generated ones) in a Role and RoleBinding per watched
// namespace, no ClusterRole or ClusterRoleBinding that grants the operator
// anything, and --watch-namespaces on the manager.
func testChartNamespaced(t *testing.T) {
	objs := helmTemplate(t, "rbac.namespaced=true", "watchNamespaces={tenant-a,tenant-b}")
	generated := find(t, readObjects(t, filepath.Join(root, "config", "rbac", "role.yaml")), "ClusterRole", "manager-role")
	// The secure metrics' reviews are cluster-scoped: the one cluster-wide
	// grant a namespaced install keeps, and it allows nothing else.
	checkMetricsRBAC(t, objs)
	for _, o := range objs {
		if strings.HasPrefix(o.GetName(), "finch-operator-metrics-") {
			continue
		}
		switch o.GetKind() {
		case "ClusterRoleBinding":
			t.Errorf("namespaced install renders %s", key(o))
		case "ClusterRole":
			for g := range grants(t, o) {
				if !strings.HasPrefix(g, "finch.connectops.dev|") {
					t.Errorf("namespaced install renders %s granting %s", key(o), g)
				}
			}
		}
	}
	for _, ns := range []string{"tenant-a", "tenant-b"} {
		role := findIn(t, objs, "Role", ns, "finch-operator-manager")
		compareRules(t, "the chart's Role in "+ns, role, "config/rbac/role.yaml (generated)", generated)
		binding := findIn(t, objs, "RoleBinding", ns, "finch-operator-manager")
		subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
		if len(subjects) != 1 || subjects[0].(map[string]any)["namespace"] != helmNamespace {
			t.Errorf("RoleBinding in %s binds %v, want the release's ServiceAccount", ns, subjects)
		}
	}
	checkBudgetRole(t, "the chart", findIn(t, objs, "Role", helmNamespace, "finch-operator-budget"),
		findIn(t, objs, "RoleBinding", helmNamespace, "finch-operator-budget"), "finch-operator", helmNamespace)
	dep := find(t, objs, "Deployment", "finch-operator")
	args, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	if !strings.Contains(fmt.Sprint(args), "--watch-namespaces=tenant-a,tenant-b") {
		t.Errorf("the manager does not get --watch-namespaces: %v", args)
	}
	// Without watchNamespaces a namespaced install is refused, not cluster-wide.
	cmd := exec.Command(helmBinary, "template", helmRelease, chartDir, "--kube-version", kubeVersion, "--set", "rbac.namespaced=true")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "rbac.namespaced needs watchNamespaces") {
		t.Errorf("rbac.namespaced without watchNamespaces: err %v, output %s", err, out)
	}
}

// checkBudgetRole checks the namespaced install's Role for the Finch
// applications' budget ConfigMaps in the cluster resource namespace: get,
// create and update ConfigMaps, nothing else, bound to the manager.
func checkBudgetRole(t *testing.T, what string, role, binding *unstructured.Unstructured, saName, saNamespace string) {
	t.Helper()
	want := map[string]bool{"|configmaps|create||": true, "|configmaps|get||": true, "|configmaps|update||": true}
	got := grants(t, role)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s's budget Role grants %v, want %v", what, got, want)
	}
	ref, _, _ := unstructured.NestedStringMap(binding.Object, "roleRef")
	if ref["kind"] != "Role" || ref["name"] != role.GetName() {
		t.Errorf("%s's budget RoleBinding refers to %v, want Role %s", what, ref, role.GetName())
	}
	subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
	wantSubjects := []any{map[string]any{"kind": "ServiceAccount", "name": saName, "namespace": saNamespace}}
	if !reflect.DeepEqual(subjects, wantSubjects) {
		t.Errorf("%s's budget RoleBinding binds %v, want %v", what, subjects, wantSubjects)
	}
}

func findIn(t *testing.T, objs []*unstructured.Unstructured, kind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == ns && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s/%s among %v", kind, ns, name, keys(objs))
	return nil
}

// testUserRoles checks the editor and viewer roles people get: the chart's
// and config/rbac's grant the same and aggregate into the same built-in roles
// (admin and edit manage FinchConnections, only admin FinchApps, view reads),
// and none grants anything outside finch.connectops.dev (no Secrets).
func testUserRoles(t *testing.T) {
	requireHelm(t)
	rendered := helmTemplate(t)
	want := map[string][]string{
		"finchconnection-editor": {"admin", "edit"},
		"finchconnection-viewer": {"view"},
		"finchapp-editor":        {"admin"},
		"finchapp-viewer":        {"admin", "edit", "view"},
		"clusterfinchapp-editor": nil,
		"clusterfinchapp-viewer": nil,
	}
	for name, to := range want {
		file := strings.ReplaceAll(name, "-", "_") + "_role.yaml"
		kustomize := find(t, readObjects(t, filepath.Join(root, "config", "rbac", file)), "ClusterRole", name+"-role")
		chart := find(t, rendered, "ClusterRole", "finch-operator-"+name)
		compareRules(t, "charts/finch-operator/templates/user-roles.yaml ("+name+")", chart, "config/rbac/"+file, kustomize)
		for _, obj := range []*unstructured.Unstructured{kustomize, chart} {
			var got []string
			for k, v := range obj.GetLabels() {
				if role, ok := strings.CutPrefix(k, "rbac.authorization.k8s.io/aggregate-to-"); ok && v == "true" {
					got = append(got, role)
				}
			}
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(to, ",") {
				t.Errorf("%s (%s) aggregates to %v, want %v", obj.GetName(), obj.GetLabels()["app.kubernetes.io/managed-by"], got, to)
			}
			for g := range grants(t, obj) {
				if !strings.HasPrefix(g, "finch.connectops.dev|") {
					t.Errorf("%s grants %s: user roles grant only finch.connectops.dev resources", obj.GetName(), g)
				}
			}
		}
	}
}

// compareRules compares two RBAC roles as sets of (apiGroup, resource, verb,
// resourceName, nonResourceURL) grants, so rule grouping and order do not matter.
func compareRules(t *testing.T, gotName string, got *unstructured.Unstructured, wantName string, want *unstructured.Unstructured) {
	t.Helper()
	g, w := grants(t, got), grants(t, want)
	var missing, extra []string
	for k := range w {
		if !g[k] {
			missing = append(missing, k)
		}
	}
	for k := range g {
		if !w[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("RBAC rules of %s differ from %s; update %s.\n  missing (group|resource|verb|resourceName|nonResourceURL):\n    %s\n  extra:\n    %s",
			gotName, wantName, gotName, strings.Join(missing, "\n    "), strings.Join(extra, "\n    "))
	}
}

func grants(t *testing.T, role *unstructured.Unstructured) map[string]bool {
	t.Helper()
	rules, _, err := unstructured.NestedSlice(role.Object, "rules")
	if err != nil {
		t.Fatalf("%s rules: %v", key(role), err)
	}
	out := map[string]bool{}
	list := func(r map[string]any, field string) []string {
		var s []string
		if v, ok := r[field].([]any); ok {
			for _, x := range v {
				s = append(s, fmt.Sprint(x))
			}
		}
		if len(s) == 0 {
			s = []string{""}
		}
		return s
	}
	for _, raw := range rules {
		r := raw.(map[string]any)
		for _, group := range list(r, "apiGroups") {
			for _, res := range list(r, "resources") {
				for _, verb := range list(r, "verbs") {
					for _, name := range list(r, "resourceNames") {
						for _, url := range list(r, "nonResourceURLs") {
							out[strings.Join([]string{group, res, verb, name, url}, "|")] = true
						}
					}
				}
			}
		}
	}
	return out
}

// checkDeployment asserts the manager container's flags, probes, ports and
// restricted security settings.
func checkDeployment(t *testing.T, dep *unstructured.Unstructured, name string, wantArgs []string) {
	t.Helper()
	args := containerArgs(t, dep)
	for _, a := range wantArgs {
		if !slices.Contains(args, a) {
			t.Errorf("Deployment %s args %v lack %s", name, args, a)
		}
	}
	spec, _, _ := unstructured.NestedMap(dep.Object, "spec", "template", "spec")
	if v, _, _ := unstructured.NestedBool(spec, "securityContext", "runAsNonRoot"); !v {
		t.Errorf("Deployment %s: pod securityContext.runAsNonRoot is not true", name)
	}
	if v, _, _ := unstructured.NestedString(spec, "securityContext", "seccompProfile", "type"); v != "RuntimeDefault" {
		t.Errorf("Deployment %s: seccompProfile %q, want RuntimeDefault", name, v)
	}
	// --shutdown-delay (5s) plus the inbound server's drain and the Lease's release.
	if v, _, _ := unstructured.NestedInt64(spec, "terminationGracePeriodSeconds"); v != 30 {
		t.Errorf("Deployment %s: terminationGracePeriodSeconds %d, want 30", name, v)
	}
	ctr := container(t, dep)
	if v, _, _ := unstructured.NestedBool(ctr, "securityContext", "readOnlyRootFilesystem"); !v {
		t.Errorf("Deployment %s: readOnlyRootFilesystem is not true", name)
	}
	if v, found, _ := unstructured.NestedBool(ctr, "securityContext", "allowPrivilegeEscalation"); !found || v {
		t.Errorf("Deployment %s: allowPrivilegeEscalation is not false", name)
	}
	if v, _, _ := unstructured.NestedStringSlice(ctr, "securityContext", "capabilities", "drop"); !reflect.DeepEqual(v, []string{"ALL"}) {
		t.Errorf("Deployment %s: capabilities.drop %v, want [ALL]", name, v)
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		p, _, _ := unstructured.NestedString(ctr, probe, "httpGet", "path")
		port, _, _ := unstructured.NestedFieldNoCopy(ctr, probe, "httpGet", "port")
		if p != path || (fmt.Sprint(port) != "8081" && fmt.Sprint(port) != "health") {
			t.Errorf("Deployment %s: %s %s on %v, want %s on 8081", name, probe, p, port, path)
		}
	}
	ports := map[string]int64{}
	list, _, _ := unstructured.NestedSlice(ctr, "ports")
	for _, raw := range list {
		p := raw.(map[string]any)
		n, _ := p["containerPort"].(int64)
		ports[fmt.Sprint(p["name"])] = n
	}
	metricsPort := int64(8080)
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--metrics-bind-address=:"); ok {
			_, _ = fmt.Sscan(v, &metricsPort)
		}
	}
	for pname, want := range map[string]int64{"metrics": metricsPort, "inbound": 8082} {
		if ports[pname] != want {
			t.Errorf("Deployment %s: container port %s = %d, want %d", name, pname, ports[pname], want)
		}
	}
	for _, f := range []string{"requests", "limits"} {
		if r, _, _ := unstructured.NestedStringMap(ctr, "resources", f); r["cpu"] == "" || r["memory"] == "" {
			t.Errorf("Deployment %s: resources.%s %v lack cpu or memory", name, f, r)
		}
	}
}

func checkServicePort(t *testing.T, svc *unstructured.Unstructured, name string, port int64) {
	t.Helper()
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	for _, raw := range ports {
		p := raw.(map[string]any)
		if p["name"] == name && p["port"] == port {
			return
		}
	}
	t.Errorf("Service %s has no port %s=%d: %v", svc.GetName(), name, port, ports)
}

func container(t *testing.T, dep *unstructured.Unstructured) map[string]any {
	t.Helper()
	ctrs, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	for _, raw := range ctrs {
		if c := raw.(map[string]any); c["name"] == "manager" {
			return c
		}
	}
	t.Fatalf("Deployment %s has no manager container", dep.GetName())
	return nil
}

func containerArgs(t *testing.T, dep *unstructured.Unstructured) []string {
	t.Helper()
	args, _, _ := unstructured.NestedStringSlice(container(t, dep), "args")
	return args
}

// requireHelm fails (not skips) without bin/helm: the chart must be tested.
func requireHelm(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(helmBinary); err != nil {
		t.Fatalf("%s not found: run `make helm` (hack/helm.sh builds helm from the Go module proxy into bin/helm)", helmBinary)
	}
}

func helmTemplate(t *testing.T, set ...string) []*unstructured.Unstructured {
	t.Helper()
	requireHelm(t)
	args := []string{"template", helmRelease, chartDir, "--namespace", helmNamespace, "--kube-version", kubeVersion}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helmBinary, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return decode(t, stdout.Bytes())
}

// run runs kubectl against the envtest API server and fails on an error or a
// PodSecurity warning (the manifests must satisfy the restricted standard).
func (c *cluster) run(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	full := append([]string{"--kubeconfig", c.kubeconfig}, args...)
	cmd := exec.Command(c.kubectl, full...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	if strings.Contains(stderr.String(), "PodSecurity") {
		t.Errorf("kubectl %s: Pod Security warning:\n%s", strings.Join(args, " "), stderr.String())
	}
	return stdout.Bytes()
}

func kubectlPath(env *envtest.Environment) string {
	if p := filepath.Join(env.BinaryAssetsDirectory, "kubectl"); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	return "kubectl"
}

func decode(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.DecodeManifests(data)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func encode(t *testing.T, objs []*unstructured.Unstructured) []byte {
	t.Helper()
	data, err := testenv.EncodeManifests(objs)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func readObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, data)
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s among %v", kind, name, keys(objs))
	return nil
}

func key(o *unstructured.Unstructured) string {
	return o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
}

func keys(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, key(o))
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

func basenames(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, filepath.Base(p))
	}
	sort.Strings(out)
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
