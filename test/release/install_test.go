//go:build release

package release

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/pkg/finchsim"
	"github.com/connectops/finch-operator/test/podrun"
)

// TestInstall installs the release the two ways docs/install.md gives, each
// on its own API server (envtest): `helm install` of the chart from the
// registry, with no image values, and `kubectl apply -f dist/install.yaml`.
// There is no kubelet, so the test plays it: it reads the Deployment the
// install created, pulls its image from the registry and runs it as the Pod
// spec says (test/podrun), under the ServiceAccount the install made. A
// FinchConnection then reaches AwaitingConnect against the Finch simulator.
func TestInstall(t *testing.T) {
	t.Run("helm", func(t *testing.T) {
		c := newCluster(t, "helm", "127.0.0.21")
		ref := "oci://" + *registry + "/charts/finch-operator"
		out := run(t, nil, *helmBin, "install", "finch-operator", ref, "--version", chartVersion(),
			"--plain-http", "--namespace", "finch-operator", "--create-namespace", "--kubeconfig", c.kubeconfig)
		t.Logf("helm install finch-operator %s --version %s: %s", ref, chartVersion(), firstLine(out))
		c.runOperator(t, *registry+"/finch-operator:"+*version)
	})
	t.Run("install.yaml", func(t *testing.T) {
		c := newCluster(t, "install-yaml", "127.0.0.22")
		c.kubectl(t, nil, "apply", "--server-side", "-f", filepath.Join(*distDir, "install.yaml"))
		digest := strings.TrimSpace(string(crane(t, "digest", *registry+"/finch-operator:"+*version)))
		c.runOperator(t, *registry+"/finch-operator@"+digest)
	})
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// cluster is one install's world: an API server, the simulator, the operator's container.
type cluster struct {
	name       string
	podIP      string // the stand-in Pod IP the container's listeners bind
	dir        string
	kubeconfig string
	kubectlBin string
	apiHost    string
	apiPort    string
	caData     []byte
}

func newCluster(t *testing.T, name, podIP string) *cluster {
	c := &cluster{name: name, podIP: podIP, dir: filepath.Join(*logDir, name)}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	// The CRDs come from the release, not config/crd.
	env.CRDDirectoryPaths = nil
	env.ErrorIfCRDPathMissing = false
	cfg, err := testenv.Start(env)
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	c.apiHost, c.apiPort, _ = net.SplitHostPort(u.Host)
	c.caData = cfg.CAData
	admin, err := env.ControlPlane.AddUser(envtest.User{Name: "release-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	if err := os.WriteFile(c.kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	c.kubectlBin = filepath.Join(env.BinaryAssetsDirectory, "kubectl")
	if _, err := os.Stat(c.kubectlBin); err != nil {
		c.kubectlBin = "kubectl"
	}
	return c
}

func (c *cluster) kubectl(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := c.kubectlErr(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (c *cluster) kubectlErr(stdin []byte, args ...string) ([]byte, error) {
	args = append([]string{"--kubeconfig", c.kubeconfig}, args...)
	if stdin == nil {
		return runErr(nil, c.kubectlBin, args...)
	}
	f := filepath.Join(c.dir, "stdin.yaml")
	if err := os.WriteFile(f, stdin, 0o600); err != nil {
		return nil, err
	}
	for i, a := range args {
		if a == "-" {
			args[i] = f
		}
	}
	return runErr(nil, c.kubectlBin, args...)
}

// runOperator does what the kubelet would for the install's Deployment:
// pull its image, mount its ServiceAccount, run its container as its Pod
// spec says. wantImage is the image the install must name.
func (c *cluster) runOperator(t *testing.T, wantImage string) {
	var list appsv1.DeploymentList
	if err := json.Unmarshal(c.kubectl(t, nil, "get", "deployments", "--all-namespaces", "-o", "json"), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("the install created %d Deployments, want 1", len(list.Items))
	}
	dep := &list.Items[0]
	var image string
	for _, ct := range dep.Spec.Template.Spec.Containers {
		if ct.Name == "manager" {
			image = ct.Image
		}
	}
	if image != wantImage {
		t.Fatalf("Deployment %s/%s runs image %q, want %q", dep.Namespace, dep.Name, image, wantImage)
	}

	// Pull as the kubelet would, from the registry (not a local build).
	_, _ = runErr(nil, "docker", "rmi", "-f", image)
	start := time.Now()
	run(t, nil, "docker", "pull", "-q", image)
	user := strings.TrimSpace(string(run(t, nil, "docker", "image", "inspect", "-f", "{{.Config.User}}", image)))
	t.Logf("docker pull %s: %.1fs, image user %s", image, time.Since(start).Seconds(), user)
	pod, err := podrun.FromDeployment(dep, "manager", podrun.ImageConfig{User: user})
	if err != nil {
		t.Fatalf("the Deployment's Pod spec: %v", err)
	}

	// The ServiceAccount's files, as the kubelet projects them.
	saDir := filepath.Join(c.dir, "serviceaccount")
	if err := os.MkdirAll(saDir, 0o755); err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(c.kubectl(t, nil, "create", "token", pod.ServiceAccount, "-n", dep.Namespace, "--duration=1h")))
	for name, data := range map[string][]byte{"ca.crt": c.caData, "token": []byte(token), "namespace": []byte(dep.Namespace)} {
		if err := os.WriteFile(filepath.Join(saDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	simURL, clientID := c.startSim(t, pod)
	c.applySamples(t, simURL, pod)

	// The manifests let the manager call only api.tryfinch.com; this
	// cluster's Finch is the simulator (appended last, so it wins).
	sim, _ := url.Parse(simURL)
	pod.Args = append(slices.Clone(pod.Args), "--finch-api-hosts="+sim.Host)
	name := "finch-release-" + c.name
	_, _ = runErr(nil, "docker", "rm", "-f", name)
	args := append([]string{"run", "--detach"}, pod.DockerRunArgs(name, saDir, c.apiHost, c.apiPort)...)
	// Its own label: `make test-e2e` removes containers labelled finch-operator.e2e=1 when it starts.
	for i, a := range args {
		if a == "finch-operator.e2e=1" {
			args[i] = "finch-operator.release=1"
		}
	}
	args = append(args, image)
	args = append(args, pod.CommandArgs(c.podIP)...)
	run(t, nil, "docker", args...)
	t.Cleanup(func() {
		logs, _ := runErr(nil, "docker", "logs", name)
		_ = os.WriteFile(filepath.Join(c.dir, name+".log"), logs, 0o644)
		_, _ = runErr(nil, "docker", "rm", "-f", name)
	})
	t.Logf("operator %s running as %s from %s (Pod IP %s, app %s)", name, pod.User, image, c.podIP, clientID)

	c.await(t, name, "FinchApp default Ready", func() (bool, string) {
		s := c.field("finchapp", "default", `{.status.conditions[?(@.type=="Ready")].status}`)
		return s == "True", "Ready=" + s
	})
	c.await(t, name, "FinchConnection acme AwaitingConnect with a Connect session", func() (bool, string) {
		p := c.field("fconn", "acme", "{.status.phase}")
		id := c.field("fconn", "acme", "{.status.session.id}")
		return p == "AwaitingConnect" && id != "", "phase=" + p + " session=" + id
	})
	t.Logf("acme: AwaitingConnect, session %s, connect URL %s", c.field("fconn", "acme", "{.status.session.id}"),
		c.field("fconn", "acme", "{.status.session.connectURL}"))
}

func (c *cluster) inboundURL(pod *podrun.Pod) string {
	return fmt.Sprintf("http://%s:%d", c.podIP, pod.Ports["inbound"])
}

func (c *cluster) startSim(t *testing.T, pod *podrun.Pod) (string, string) {
	lf, err := os.Create(filepath.Join(c.dir, "finchsim.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lf.Close() })
	sim := finchsim.New(finchsim.Options{Logf: func(format string, args ...any) { fmt.Fprintf(lf, format+"\n", args...) }})
	creds := sampleSecret(t, "finch-credentials")
	sim.AddApp(finchsim.AppConfig{
		ClientID: creds["client_id"], ClientSecret: creds["client_secret"],
		WebhookURL:    c.inboundURL(pod) + "/webhooks/default/default",
		WebhookSecret: sampleSecret(t, "finch-webhook")["webhook_secret"],
	})
	u := sim.Start()
	t.Cleanup(sim.Close)
	return u, creds["client_id"]
}

// applySamples applies the demo samples (hack/demo/samples: Secrets included) with the FinchApp pointed at the simulator.
func (c *cluster) applySamples(t *testing.T, simURL string, pod *podrun.Pod) {
	var objs []*unstructured.Unstructured
	for _, o := range samples(t) {
		if o.GetKind() == "FinchApp" {
			_ = unstructured.SetNestedField(o.Object, simURL, "spec", "apiURL")
			_ = unstructured.SetNestedField(o.Object, c.inboundURL(pod), "spec", "publicURL")
		}
		objs = append(objs, o)
	}
	data, err := testenv.EncodeManifests(objs)
	if err != nil {
		t.Fatal(err)
	}
	c.kubectl(t, data, "apply", "-n", "default", "-f", "-")
}

func (c *cluster) field(kind, name, jsonpath string) string {
	out, err := c.kubectlErr(nil, "get", kind, name, "-n", "default", "-o", "jsonpath="+jsonpath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// await polls f until it reports done, failing at once when the container
// has stopped and after -step-timeout otherwise.
func (c *cluster) await(t *testing.T, container, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(*stepTimeout)
	for {
		ok, detail := f()
		if ok {
			return
		}
		state, _ := runErr(nil, "docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", container)
		running := strings.HasPrefix(string(state), "running")
		if !running || time.Now().After(deadline) {
			logs, _ := runErr(nil, "docker", "logs", "--tail", "30", container)
			t.Fatalf("%s did not happen (container %s: %s; last: %s); its log ends:\n%s", what, container, strings.TrimSpace(string(state)), detail, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func samples(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "hack", "demo", "samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in hack/demo/samples: %v", err)
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := testenv.DecodeManifests(b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, objs...)
	}
	return out
}

func sampleSecret(t *testing.T, name string) map[string]string {
	t.Helper()
	for _, o := range samples(t) {
		if o.GetKind() == "Secret" && o.GetName() == name {
			m, _, _ := unstructured.NestedStringMap(o.Object, "stringData")
			return m
		}
	}
	t.Fatalf("no Secret %s in hack/demo/samples", name)
	return nil
}
