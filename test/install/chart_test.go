package install_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// kubeVersion is the Kubernetes release the tests run (envtest's,
// K8S_VERSION in hack/tools.versions). helm template and lint render for it:
// the chart's kubeVersion refuses helm's built-in default when bin/helm was
// built without its Kubernetes version stamped.
var kubeVersion = func() string {
	raw, err := os.ReadFile(filepath.Join(root, "hack", "tools.versions"))
	if err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "K8S_VERSION" {
				return f[2]
			}
		}
	}
	return "1.37.2"
}()

// helmTemplateErr renders the chart and returns helm's error output instead of failing.
func helmTemplateErr(set ...string) (string, error) {
	args := []string{"template", helmRelease, chartDir, "--namespace", helmNamespace, "--kube-version", kubeVersion}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := exec.Command(helmBinary, args...).CombinedOutput()
	return string(out), err
}

// testChartSchema: values.schema.json makes a misspelt or malformed value an
// install error instead of a silently ignored key (the issue's
// `--set watchNamespace=x`), while every documented value still renders.
func testChartSchema(t *testing.T) {
	requireHelm(t)
	for _, tc := range []struct{ set, want string }{
		{"watchNamespace=x", "additional properties 'watchNamespace' not allowed"},
		{"metrics.sevure=false", "additional properties 'sevure' not allowed"},
		{"inbound.ingress.hosts[0]=a.example.com", "additional properties 'hosts' not allowed"},
		{"prometheusRule.runbookURL=https://wiki.example.com", "additional properties 'runbookURL' not allowed"},
		{"finchIPBudget=lots", "finchIPBudget"},
		{"inbound.callbackRatePerIP=10 per minute", "callbackRatePerIP"},
		{"image.digest=latest", "digest"},
		{"logEncoder=xml", "logEncoder"},
		{"watchNamespaces[0]=Tenant_A", "watchNamespaces"},
	} {
		out, err := helmTemplateErr(tc.set)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("helm template --set %s: err %v, want a schema error mentioning %q; output:\n%.600s", tc.set, err, tc.want, out)
		}
	}
	if out, err := exec.Command(helmBinary, "lint", "--strict", "--kube-version", kubeVersion, chartDir, "--set", "watchNamespace=x").CombinedOutput(); err == nil {
		t.Errorf("helm lint --strict --set watchNamespace=x passed:\n%s", out)
	}
	// Every key values.yaml documents is in the schema (and the schema
	// accepts the defaults): rendering with the defaults passes, and so does
	// each option the adopter tests use.
	if out, err := helmTemplateErr("metrics.port=9443", "podDisruptionBudget.minAvailable=50%", "logLevel=2"); err != nil {
		t.Errorf("valid values refused: %v\n%s", err, out)
	}
}

// testChartAdopterOptions renders what adopters expect of a chart at
// cert-manager's level and validates it on the API server.
func testChartAdopterOptions(t *testing.T, c *cluster) {
	requireHelm(t)
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	extraString := `apiVersion: v1
kind: ConfigMap
metadata:
  name: extra-templated
  namespace: "{{ .Release.Namespace }}"
data:
  release: "{{ .Release.Name }}"`
	// Not t.TempDir(): the subtest's name has commas, and helm splits -f on them.
	dir, err := os.MkdirTemp("", "chart-values")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	valuesFile := filepath.Join(dir, "values.yaml")
	values := map[string]any{
		"replicaCount":        2,
		"image":               map[string]any{"digest": digest},
		"podDisruptionBudget": map[string]any{"enabled": true},
		"networkPolicy": map[string]any{"enabled": true, "inboundFrom": []any{
			map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "ingress-nginx"}}},
		}},
		"topologySpreadConstraints": []any{map[string]any{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}},
		"inbound":                   map[string]any{"callbackRequireState": false, "trustedProxies": []any{"10.0.0.0/8"}},
		"pprof":                     map[string]any{"enabled": true},
		"extraObjects": []any{
			map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "extra-plain", "namespace": helmNamespace}, "data": map[string]any{"a": "b"}},
			extraString,
		},
	}
	raw, _ := yaml.Marshal(values)
	if err := os.WriteFile(valuesFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helmBinary, "template", helmRelease, chartDir, "--namespace", helmNamespace, "--kube-version", kubeVersion, "-f", valuesFile)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	objs := decode(t, stdout.Bytes())

	dep := find(t, objs, "Deployment", helmRelease)
	selector, _, _ := unstructured.NestedStringMap(dep.Object, "spec", "selector", "matchLabels")
	ctr := container(t, dep)
	if img := ctr["image"].(string); !strings.HasSuffix(img, ":v0.1.0@"+digest) {
		t.Errorf("image %q, want the tag pinned by image.digest (…:v0.1.0@%s)", img, digest)
	}
	args := containerArgs(t, dep)
	for _, want := range []string{"--callback-require-state=false", "--trusted-proxies=10.0.0.0/8", "--pprof-bind-address=:8083"} {
		if !slices.Contains(args, want) {
			t.Errorf("manager args %v lack %s", args, want)
		}
	}
	spread, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "topologySpreadConstraints")
	if len(spread) != 1 {
		t.Fatalf("topologySpreadConstraints %v, want the one given", spread)
	}
	if got, _, _ := unstructured.NestedStringMap(spread[0].(map[string]any), "labelSelector", "matchLabels"); !reflect.DeepEqual(got, selector) {
		t.Errorf("topology spread labelSelector %v, want the manager pods' selector %v", got, selector)
	}

	pdb := find(t, objs, "PodDisruptionBudget", helmRelease)
	if got, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels"); !reflect.DeepEqual(got, selector) {
		t.Errorf("PDB selector %v, want the Deployment's %v", got, selector)
	}
	if v, _, _ := unstructured.NestedFieldNoCopy(pdb.Object, "spec", "maxUnavailable"); fmt.Sprint(v) != "1" {
		t.Errorf("PDB maxUnavailable %v, want 1 by default", v)
	}

	np := find(t, objs, "NetworkPolicy", helmRelease)
	if got, _, _ := unstructured.NestedStringMap(np.Object, "spec", "podSelector", "matchLabels"); !reflect.DeepEqual(got, selector) {
		t.Errorf("NetworkPolicy podSelector %v, want the manager pods' %v", got, selector)
	}
	ingress, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
	var opened []string
	for _, r := range ingress {
		ports, _, _ := unstructured.NestedSlice(r.(map[string]any), "ports")
		from, _, _ := unstructured.NestedSlice(r.(map[string]any), "from")
		opened = append(opened, fmt.Sprintf("%v from %d peers", ports[0].(map[string]any)["port"], len(from)))
	}
	if want := []string{"8082 from 1 peers", "8443 from 1 peers"}; !reflect.DeepEqual(opened, want) {
		t.Errorf("NetworkPolicy opens %v, want %v (inbound from inboundFrom, metrics from metricsFrom, nothing else)", opened, want)
	}

	if cm := findIn(t, objs, "ConfigMap", helmNamespace, "extra-templated"); cm.Object["data"].(map[string]any)["release"] != helmRelease {
		t.Errorf("extraObjects string not run through tpl: %v", cm.Object["data"])
	}
	findIn(t, objs, "ConfigMap", helmNamespace, "extra-plain")

	// PDB minAvailable instead; both at once is refused.
	objs2 := helmTemplate(t, "podDisruptionBudget.enabled=true", "podDisruptionBudget.minAvailable=1")
	if v, _, _ := unstructured.NestedFieldNoCopy(find(t, objs2, "PodDisruptionBudget", helmRelease).Object, "spec", "minAvailable"); fmt.Sprint(v) != "1" {
		t.Errorf("PDB minAvailable %v, want 1", v)
	}
	if out, err := helmTemplateErr("podDisruptionBudget.enabled=true", "podDisruptionBudget.minAvailable=1", "podDisruptionBudget.maxUnavailable=1"); err == nil || !strings.Contains(out, "not both") {
		t.Errorf("PDB with minAvailable and maxUnavailable: err %v\n%s", err, out)
	}
	// Nothing of this by default.
	for _, o := range helmTemplate(t) {
		if k := o.GetKind(); k == "PodDisruptionBudget" || k == "NetworkPolicy" {
			t.Errorf("%s rendered with default values", key(o))
		}
	}
	// Plain-HTTP metrics remain an option: no reviews, no reader role, port 8080.
	plain := helmTemplate(t, "metrics.secure=false")
	for _, o := range plain {
		if strings.HasPrefix(o.GetName(), helmRelease+"-metrics-") {
			t.Errorf("%s rendered with metrics.secure=false", key(o))
		}
	}
	if a := containerArgs(t, find(t, plain, "Deployment", helmRelease)); !slices.Contains(a, "--metrics-bind-address=:8080") || slices.Contains(a, "--metrics-secure") {
		t.Errorf("metrics.secure=false: args %v, want plain HTTP on :8080", a)
	}
	// A provided certificate is mounted for --metrics-cert-dir.
	withCert := find(t, helmTemplate(t, "metrics.certSecretName=metrics-tls"), "Deployment", helmRelease)
	if a := containerArgs(t, withCert); !slices.Contains(a, "--metrics-cert-dir=/etc/finch-operator/metrics-certs") {
		t.Errorf("metrics.certSecretName: args %v lack --metrics-cert-dir", a)
	}
	if vols, _, _ := unstructured.NestedSlice(withCert.Object, "spec", "template", "spec", "volumes"); !strings.Contains(fmt.Sprint(vols), "secretName:metrics-tls") {
		t.Errorf("metrics.certSecretName: volumes %v do not mount Secret metrics-tls", vols)
	}
	// The ServiceMonitor scrapes HTTPS with Prometheus's token.
	sm := find(t, helmTemplate(t, "metrics.serviceMonitor.enabled=true"), "ServiceMonitor", helmRelease)
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	ep := eps[0].(map[string]any)
	if ep["scheme"] != "https" || ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" || ep["tlsConfig"] == nil {
		t.Errorf("ServiceMonitor endpoint %v, want https with the bearer token file and a tlsConfig", ep)
	}

	// The whole set passes server-side validation and admission (restricted PSS).
	out := c.run(t, encode(t, objs), "apply", "--dry-run=server", "-f", "-")
	t.Logf("kubectl apply --dry-run=server (adopter options):\n%s", out)
}

// checkMetricsRBAC: the manager may create TokenReviews and
// SubjectAccessReviews and nothing else through the metrics-auth binding,
// and the metrics-reader role grants GET /metrics only.
func checkMetricsRBAC(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	auth := find(t, objs, "ClusterRole", helmRelease+"-metrics-auth")
	if got, want := grants(t, auth), map[string]bool{"authentication.k8s.io|tokenreviews|create||": true, "authorization.k8s.io|subjectaccessreviews|create||": true}; !reflect.DeepEqual(got, want) {
		t.Errorf("metrics-auth grants %v, want %v", got, want)
	}
	binding := find(t, objs, "ClusterRoleBinding", helmRelease+"-metrics-auth")
	subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
	if want := []any{map[string]any{"kind": "ServiceAccount", "name": helmRelease, "namespace": helmNamespace}}; !reflect.DeepEqual(subjects, want) {
		t.Errorf("metrics-auth binds %v, want the manager's ServiceAccount", subjects)
	}
	reader := find(t, objs, "ClusterRole", helmRelease+"-metrics-reader")
	if got, want := grants(t, reader), map[string]bool{"||get||/metrics": true}; !reflect.DeepEqual(got, want) {
		t.Errorf("metrics-reader grants %v, want %v", got, want)
	}
}

// testChartNotes renders NOTES.txt through `helm install --dry-run=server`
// and checks what it tells the user: the three CRDs, the trustedProxies
// warning, the kubectl finch next step, no repository paths and no
// callback URL without its random segment; then it runs the notes' one
// `kubectl get` command against the API server and checks it prints the
// FinchApp's real callback and webhook URLs.
func testChartNotes(t *testing.T, c *cluster) {
	requireHelm(t)
	out, err := exec.Command(helmBinary, "install", helmRelease, chartDir, "--namespace", helmNamespace,
		"--dry-run=server", "--kubeconfig", c.kubeconfig, "--set", "crds.install=false",
		"--set", "inbound.ingress.enabled=true", "--set", "inbound.ingress.host=finch.example.com",
		"--set", "inbound.ingress.tls[0].secretName=finch-tls").CombinedOutput()
	if err != nil {
		t.Fatalf("helm install --dry-run=server: %v\n%s", err, out)
	}
	_, notes, ok := strings.Cut(string(out), "NOTES:")
	if !ok {
		t.Fatalf("helm install printed no NOTES:\n%s", out)
	}
	for _, want := range []string{
		"crds.install is false", "FinchApp, ClusterFinchApp,\nFinchConnection", // all three CRDs
		"spec.publicURL: https://finch.example.com",
		"inbound.trustedProxies is empty",
		"kubectl finch link <connection>",
		"kubectl -n " + helmNamespace + " rollout status deployment/" + helmRelease,
		helmRelease + "-metrics-reader",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}
	for _, bad := range []string{"/callback/<namespace>/<app>\n", "config/samples", "config/crd", "two CRDs", "README"} {
		if strings.Contains(notes, bad) {
			t.Errorf("NOTES say %q (a callback URL without its random segment, or a path only the repository has):\n%s", bad, notes)
		}
	}

	// The one command that reads both URLs, with its continuation lines joined.
	m := regexp.MustCompile(`(?m)^\s*(kubectl -n <namespace> get finchapp <app>(?:[^\n\\]|\\[^\n]|\\\n)*)$`).FindStringSubmatch(notes)
	if m == nil {
		t.Fatalf("NOTES have no `kubectl -n <namespace> get finchapp <app>` command:\n%s", notes)
	}
	command := strings.ReplaceAll(m[1], "\\\n", " ")
	const ns, app = "notes-check", "default"
	callbackURL := "https://finch.example.com/callback/" + ns + "/" + app + "/q8Zt3mPn0aXw"
	webhookURL := "https://finch.example.com/webhooks/" + ns + "/" + app
	namespace := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
	finchApp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "finch.connectops.dev/v1alpha1", "kind": "FinchApp",
		"metadata": map[string]any{"name": app, "namespace": ns},
		"spec": map[string]any{
			"credentialsSecretRef": map[string]any{"name": "finch-credentials"},
			"webhookSecretRef":     map[string]any{"name": "finch-webhook"},
			"publicURL":            "https://finch.example.com",
		},
	}}
	c.run(t, encode(t, []*unstructured.Unstructured{namespace, finchApp}), "apply", "-f", "-")
	c.run(t, nil, "-n", ns, "patch", "finchapp", app, "--subresource=status", "--type=merge",
		"-p", fmt.Sprintf(`{"status":{"callbackURL":%q,"webhookURL":%q}}`, callbackURL, webhookURL))
	command = strings.NewReplacer("<namespace>", ns, "<app>", app).Replace(command)
	command = strings.Replace(command, "kubectl ", c.kubectl+" --kubeconfig "+c.kubeconfig+" ", 1)
	got, err := exec.Command("bash", "-c", command).CombinedOutput()
	if err != nil {
		t.Fatalf("the NOTES command %q: %v\n%s", command, err, got)
	}
	for _, want := range []string{"redirect URI: " + callbackURL + "\n", "webhook URL:  " + webhookURL + "\n"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("the NOTES command prints\n%s\nwant a line %q", got, want)
		}
	}
}

// testChartMetadata checks Chart.yaml carries what Artifact Hub and `helm
// install` use: kubeVersion (so an older cluster is refused), icon, home,
// sources, maintainers, and the Artifact Hub annotations, each valid YAML.
func testChartMetadata(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		KubeVersion string            `json:"kubeVersion"`
		Icon        string            `json:"icon"`
		Home        string            `json:"home"`
		Sources     []string          `json:"sources"`
		Maintainers []map[string]any  `json:"maintainers"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.Unmarshal(raw, &chart); err != nil {
		t.Fatal(err)
	}
	if chart.KubeVersion == "" || chart.Icon == "" || chart.Home == "" || len(chart.Sources) == 0 || len(chart.Maintainers) == 0 {
		t.Errorf("Chart.yaml lacks kubeVersion, icon, home, sources or maintainers: %+v", chart)
	}
	if !fileExists(filepath.Join(chartDir, filepath.Base(chart.Icon))) {
		t.Errorf("icon %s names no file of the chart", chart.Icon)
	}
	if chart.Annotations["artifacthub.io/operator"] != "true" || chart.Annotations["artifacthub.io/license"] == "" || chart.Annotations["artifacthub.io/operatorCapabilities"] == "" {
		t.Errorf("Chart.yaml annotations %v lack operator, license or operatorCapabilities", chart.Annotations)
	}
	for _, a := range []string{"crds", "crdsExamples", "images", "links", "changes"} {
		var list []map[string]any
		if err := yaml.Unmarshal([]byte(chart.Annotations["artifacthub.io/"+a]), &list); err != nil || len(list) == 0 {
			t.Errorf("annotation artifacthub.io/%s is not a YAML list: %v", a, err)
		}
	}
	// Every CRD is listed, with an example that names it.
	var crds, examples []map[string]any
	_ = yaml.Unmarshal([]byte(chart.Annotations["artifacthub.io/crds"]), &crds)
	_ = yaml.Unmarshal([]byte(chart.Annotations["artifacthub.io/crdsExamples"]), &examples)
	files, _ := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	for _, f := range files {
		crd := readObjects(t, f)[0]
		kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
		if !slices.ContainsFunc(crds, func(m map[string]any) bool { return m["kind"] == kind && m["name"] == crd.GetName() }) {
			t.Errorf("artifacthub.io/crds lacks %s (%s)", kind, crd.GetName())
		}
		if !slices.ContainsFunc(examples, func(m map[string]any) bool { return m["kind"] == kind }) {
			t.Errorf("artifacthub.io/crdsExamples lacks a %s", kind)
		}
	}
	// An older cluster is refused at install.
	out, err := exec.Command(helmBinary, "template", helmRelease, chartDir, "--kube-version", "1.28.0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "kubeVersion") {
		t.Errorf("helm template --kube-version 1.28.0: err %v, want the kubeVersion refusal\n%.400s", err, out)
	}
}

// testChartSimulator renders simulator.enabled: the simulator runs from the
// finch-simulator image beside the operator's (same tag), registers the
// credentials and webhook secret of the FinchApp's Secrets, posts webhooks to
// the FinchApp's webhook path on the inbound Service, and the manager may
// call it (--finch-api-hosts allows the FinchApp's apiURL). Off by default.
func testChartSimulator(t *testing.T, c *cluster) {
	requireHelm(t)
	for _, o := range helmTemplate(t) {
		if strings.Contains(o.GetName(), "simulator") {
			t.Errorf("%s rendered with default values", key(o))
		}
	}
	objs := helmTemplate(t, "simulator.enabled=true", "image.tag=v9.9.9")
	sim := find(t, objs, "Deployment", helmRelease+"-simulator")
	ctrs, _, _ := unstructured.NestedSlice(sim.Object, "spec", "template", "spec", "containers")
	ctr := ctrs[0].(map[string]any)
	if ctr["image"] != "ghcr.io/connectops/finch-simulator:v9.9.9" {
		t.Errorf("simulator image %v, want finch-simulator with the operator's registry and tag", ctr["image"])
	}
	if cmd, _, _ := unstructured.NestedStringSlice(ctr, "command"); !reflect.DeepEqual(cmd, []string{"/finchsim"}) {
		t.Errorf("simulator command %v, want /finchsim", cmd)
	}
	args, _, _ := unstructured.NestedStringSlice(ctr, "args")
	app := findIn(t, objs, "FinchApp", helmNamespace, "simulator")
	if hook := app.GetAnnotations()["helm.sh/hook"]; !strings.Contains(hook, "post-install") {
		t.Errorf("the simulator FinchApp is not a post-install hook (its CRD comes with the release): %q", hook)
	}
	spec, _, _ := unstructured.NestedMap(app.Object, "spec")
	wantWebhook := "--webhook-url=http://" + helmRelease + "-inbound." + helmNamespace + ".svc:8082/webhooks/" + helmNamespace + "/simulator"
	for _, want := range []string{"--addr=:8090", wantWebhook, "--client-id=$(CLIENT_ID)", "--client-secret=$(CLIENT_SECRET)", "--webhook-secret=$(WEBHOOK_SECRET)"} {
		if !slices.Contains(args, want) {
			t.Errorf("simulator args %v lack %s", args, want)
		}
	}
	// The simulator's env comes from the very Secrets the FinchApp names.
	env := fmt.Sprint(ctr["env"])
	for _, ref := range []string{"credentialsSecretRef", "webhookSecretRef"} {
		name, _, _ := unstructured.NestedString(spec, ref, "name")
		if name == "" || !strings.Contains(env, "name:"+name) {
			t.Errorf("simulator env %s does not read the FinchApp's %s Secret %q", env, ref, name)
		}
		findIn(t, objs, "Secret", helmNamespace, name)
	}
	svc := findIn(t, objs, "Service", helmNamespace, helmRelease+"-simulator")
	checkServicePort(t, svc, "http", 8090)
	wantAPI := "http://" + helmRelease + "-simulator." + helmNamespace + ".svc:8090"
	if spec["apiURL"] != wantAPI {
		t.Errorf("FinchApp apiURL %v, want the simulator Service %s", spec["apiURL"], wantAPI)
	}
	if a := containerArgs(t, find(t, objs, "Deployment", helmRelease)); !slices.Contains(a, "--finch-api-hosts=api.tryfinch.com,"+helmRelease+"-simulator."+helmNamespace+".svc:8090") {
		t.Errorf("manager args %v do not allow the simulator's host", a)
	}
	// Server-side: the simulator's pod passes the restricted standard, the FinchApp its CRD.
	out := c.run(t, encode(t, objs), "apply", "--dry-run=server", "-f", "-")
	t.Logf("kubectl apply --dry-run=server (simulator):\n%s", out)
}
