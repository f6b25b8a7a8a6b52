package install_test

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/connectops/finch-operator/internal/finch"
)

// copyConfig copies config/ to a temporary directory and uncomments the
// given lines of its default/kustomization.yaml, as a user enabling an
// optional part does.
func copyConfig(t *testing.T, uncomment ...string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "config")
	src := filepath.Join(root, "config")
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	k := filepath.Join(dst, "default", "kustomization.yaml")
	data, err := os.ReadFile(k)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, line := range uncomment {
		if !strings.Contains(s, "\n#"+line+"\n") {
			t.Fatalf("config/default/kustomization.yaml has no commented line %q", line)
		}
		s = strings.Replace(s, "\n#"+line+"\n", "\n"+line+"\n", 1)
	}
	if err := os.WriteFile(k, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// testKustomizeComponents enables config/components/metrics-secure and
// config/components/simulator in config/default (with config/prometheus and
// config/network-policy) and checks they do what the chart's metrics.secure
// and simulator.enabled do, then validates the result on the API server.
func testKustomizeComponents(t *testing.T, c *cluster) {
	dir := copyConfig(t, "components:", "- ../components/metrics-secure", "- ../components/simulator", "- ../prometheus", "- ../network-policy")
	objs := decode(t, c.run(t, nil, "kustomize", filepath.Join(dir, "default")))
	ns := kustomizeNamespace

	// Secure metrics.
	dep := findIn(t, objs, "Deployment", ns, "finch-operator-controller-manager")
	checkDeployment(t, dep, "finch-operator-controller-manager", []string{"--metrics-bind-address=:8443", "--metrics-secure"})
	if args := containerArgs(t, dep); slices.Contains(args, "--metrics-bind-address=:8080") {
		t.Errorf("manager args %v keep the plain metrics address", args)
	}
	checkServicePort(t, findIn(t, objs, "Service", ns, "finch-operator-controller-manager-metrics-service"), "metrics", 8443)
	auth := find(t, objs, "ClusterRole", "finch-operator-metrics-auth-role")
	if got, want := grants(t, auth), map[string]bool{"authentication.k8s.io|tokenreviews|create||": true, "authorization.k8s.io|subjectaccessreviews|create||": true}; !reflect.DeepEqual(got, want) {
		t.Errorf("metrics-auth-role grants %v, want %v", got, want)
	}
	binding := find(t, objs, "ClusterRoleBinding", "finch-operator-metrics-auth-rolebinding")
	subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
	if want := []any{map[string]any{"kind": "ServiceAccount", "name": "finch-operator-controller-manager", "namespace": ns}}; !reflect.DeepEqual(subjects, want) {
		t.Errorf("metrics-auth-rolebinding binds %v, want the manager's ServiceAccount", subjects)
	}
	if got := grants(t, find(t, objs, "ClusterRole", "finch-operator-metrics-reader")); !reflect.DeepEqual(got, map[string]bool{"||get||/metrics": true}) {
		t.Errorf("metrics-reader grants %v", got)
	}
	sm := find(t, objs, "ServiceMonitor", "finch-operator-controller-manager-metrics-monitor")
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if ep := eps[0].(map[string]any); ep["scheme"] != "https" || ep["bearerTokenFile"] == nil || ep["tlsConfig"] == nil {
		t.Errorf("ServiceMonitor endpoint %v, want https with a bearer token", ep)
	}
	np := find(t, objs, "NetworkPolicy", "finch-operator-allow-metrics-traffic")
	if ports, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress"); !strings.Contains(fmt.Sprint(ports), "port:8443") {
		t.Errorf("allow-metrics-traffic opens %v, want 8443", ports)
	}

	// The simulator: every URL its pieces carry names an object the build has
	// (kustomize rewrites names, not URLs).
	app := findIn(t, objs, "FinchApp", ns, "finch-operator-simulator")
	apiURL, _, _ := unstructured.NestedString(app.Object, "spec", "apiURL")
	u, err := url.Parse(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	svcName, svcNS, _ := strings.Cut(strings.TrimSuffix(u.Hostname(), ".svc"), ".")
	sim := findIn(t, objs, "Service", svcNS, svcName)
	checkServicePort(t, sim, "http", int64(atoi(t, u.Port())))
	hosts := ""
	for _, a := range containerArgs(t, dep) {
		if v, ok := strings.CutPrefix(a, "--finch-api-hosts="); ok {
			hosts = v
		}
	}
	allowed, err := finch.ParseAPIHosts(hosts)
	if err != nil || !allowed.Allows(u) || !allowed.Allows(&url.URL{Scheme: "https", Host: "api.tryfinch.com"}) {
		t.Errorf("--finch-api-hosts=%s (err %v) does not allow both Finch and the simulator's %s", hosts, err, apiURL)
	}
	for _, ref := range []string{"credentialsSecretRef", "webhookSecretRef"} {
		name, _, _ := unstructured.NestedString(app.Object, "spec", ref, "name")
		findIn(t, objs, "Secret", ns, name)
	}
	simDep := findIn(t, objs, "Deployment", ns, "finch-operator-simulator")
	ctrs, _, _ := unstructured.NestedSlice(simDep.Object, "spec", "template", "spec", "containers")
	ctr := ctrs[0].(map[string]any)
	if img := fmt.Sprint(ctr["image"]); !strings.HasPrefix(img, "ghcr.io/connectops/finch-simulator:") {
		t.Errorf("simulator image %s", img)
	}
	args, _, _ := unstructured.NestedStringSlice(ctr, "args")
	webhook := ""
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--webhook-url="); ok {
			webhook = v
		}
	}
	w, err := url.Parse(webhook)
	if err != nil || w.Path != "/webhooks/"+ns+"/"+app.GetName() {
		t.Errorf("simulator --webhook-url=%s, want the FinchApp's webhook path /webhooks/%s/%s", webhook, ns, app.GetName())
	} else {
		inName, inNS, _ := strings.Cut(strings.TrimSuffix(w.Hostname(), ".svc"), ".")
		checkServicePort(t, findIn(t, objs, "Service", inNS, inName), "inbound", int64(atoi(t, w.Port())))
	}
	env := fmt.Sprint(ctr["env"])
	for _, s := range []string{"finch-operator-simulator-credentials", "finch-operator-simulator-webhook"} {
		if !strings.Contains(env, "name:"+s) {
			t.Errorf("simulator env %s does not read Secret %s", env, s)
		}
	}

	// Server-side validation (no ServiceMonitor/PrometheusRule CRDs in envtest).
	var rest, namespaces []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceMonitor", "PrometheusRule":
		case "Namespace":
			namespaces = append(namespaces, o)
		default:
			rest = append(rest, o)
		}
	}
	c.run(t, encode(t, namespaces), "apply", "-f", "-")
	out := c.run(t, encode(t, rest), "apply", "--dry-run=server", "-f", "-")
	t.Logf("kubectl apply --dry-run=server (config/default with components):\n%s", out)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q is not a port: %v", s, err)
	}
	return n
}

// testSamples: config/samples is shaped for a real cluster and real Finch
// (the demo keeps its loopback samples in hack/demo/samples): it builds with
// kustomize, carries no credentials, no loopback apiURL or publicURL and no
// hard-coded namespace, and the API server accepts it in any namespace;
// config/samples/multi-tenant likewise.
func testSamples(t *testing.T, c *cluster) {
	check := func(what string, objs []*unstructured.Unstructured, namespaced bool) {
		t.Helper()
		for _, o := range objs {
			if o.GetKind() == "Secret" {
				t.Errorf("%s renders Secret %s: credentials belong to the user, not a sample", what, o.GetName())
			}
			if namespaced && o.GetNamespace() != "" {
				t.Errorf("%s renders %s with a hard-coded namespace", what, key(o))
			}
			for _, field := range []string{"apiURL", "publicURL"} {
				v, found, _ := unstructured.NestedString(o.Object, "spec", field)
				if !found {
					continue
				}
				u, err := url.Parse(v)
				if err != nil || u.Scheme != "https" || u.Hostname() == "localhost" || strings.HasPrefix(u.Hostname(), "127.") {
					t.Errorf("%s: %s spec.%s = %q, want an https URL a cluster can serve (loopback is the demo's)", what, key(o), field, v)
				}
			}
		}
		raw := string(encode(t, objs))
		for _, bad := range []string{"finch-operator-system", "demo-client", "127.0.0.1"} {
			if strings.Contains(raw, bad) {
				t.Errorf("%s mentions %q", what, bad)
			}
		}
	}

	objs := decode(t, c.run(t, nil, "kustomize", filepath.Join(root, "config", "samples")))
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
	}
	if want := map[string]int{"FinchApp": 1, "FinchConnection": 3}; !reflect.DeepEqual(kinds, want) {
		t.Errorf("config/samples renders %v, want %v", kinds, want)
	}
	check("config/samples", objs, true)
	const ns = "samples-check"
	c.run(t, encode(t, []*unstructured.Unstructured{{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}}), "apply", "-f", "-")
	c.run(t, encode(t, objs), "apply", "--dry-run=server", "-n", ns, "-f", "-")

	objs = decode(t, c.run(t, nil, "kustomize", filepath.Join(root, "config", "samples", "multi-tenant")))
	check("config/samples/multi-tenant", objs, false)
	var namespaces, rest []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			namespaces = append(namespaces, o)
		} else {
			rest = append(rest, o)
		}
	}
	c.run(t, encode(t, namespaces), "apply", "-f", "-")
	c.run(t, encode(t, rest), "apply", "--dry-run=server", "-f", "-")
}
