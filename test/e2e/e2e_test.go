//go:build e2e

// The end-to-end test: the operator's image, run as its Deployment's Pod
// spec says, under the RBAC its install artifacts grant, against a real API
// server (envtest) and the Finch simulator over HTTP. `make test-e2e` builds
// the image and the installer first (hack/test-e2e.sh).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

var (
	image     = flag.String("image", "finch-operator:e2e", "the operator image to run (built by `make test-e2e`)")
	installer = flag.String("installer", filepath.Join(testenv.RepoRoot(), "dist", "install.yaml"), "the `make build-installer` output")
	helmBin   = flag.String("helm", filepath.Join(testenv.RepoRoot(), "bin", "helm"), "the helm CLI (`make helm`)")
	timeout   = flag.Duration("step-timeout", 90*time.Second, "how long each awaited state may take")
	logRoot   = flag.String("log-dir", filepath.Join(testenv.RepoRoot(), "bin", "e2e"), "where the container, simulator and control plane logs go")
)

const (
	storyNS    = "default" // where the samples go
	appName    = "default" // the sample FinchApp
	helmNS     = "finch-operator-helm"
	helmName   = "finch-operator"
	containerN = "manager"
)

// Stand-in Pod IPs: each replica binds the manifest's ports on its own
// loopback address, as each Pod would on its own IP.
var podIPs = []string{"127.0.0.11", "127.0.0.12"}

func logf(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

// summary is printed at the end: one line per step with its time.
var summary []string

// failures counts errorf/fatalf calls, so each step's summary line says
// whether that step, not an earlier one, failed.
var failures int

func errorf(t *testing.T, format string, args ...any) {
	t.Helper()
	failures++
	t.Errorf(format, args...)
}

func fatalf(t *testing.T, format string, args ...any) {
	t.Helper()
	failures++
	t.Fatalf(format, args...)
}

func fatal(t *testing.T, args ...any) {
	t.Helper()
	failures++
	t.Fatal(args...)
}

// step prints a step's title and returns a func that records its outcome.
func step(t *testing.T, title string) func() {
	t.Helper()
	fmt.Printf("\n==> %s\n", title)
	start, before := time.Now(), failures
	return func() {
		mark := "ok  "
		if failures != before {
			mark = "FAIL"
		}
		summary = append(summary, fmt.Sprintf("%s %-78s %6.1fs", mark, title, time.Since(start).Seconds()))
	}
}

func TestE2E(t *testing.T) {
	started := time.Now()
	defer func() {
		fmt.Printf("\n==> summary (%s in all)\n", time.Since(started).Round(time.Second))
		for _, s := range summary {
			fmt.Println("  " + s)
		}
	}()
	if err := os.RemoveAll(*logRoot); err != nil {
		fatal(t, err)
	}
	var img *imageConfig
	if !t.Run("image", func(t *testing.T) { img = testImage(t) }) {
		t.FailNow()
	}
	flavors := []struct {
		name   string
		render func(t *testing.T) []*unstructured.Unstructured
	}{
		{"installer", func(t *testing.T) []*unstructured.Unstructured {
			b, err := os.ReadFile(*installer)
			if err != nil {
				fatalf(t, "read the installer (run `make build-installer`): %v", err)
			}
			return decode(t, b)
		}},
		{"helm", func(t *testing.T) []*unstructured.Unstructured { return helmTemplate(t) }},
		// A namespace-scoped install: Roles in the watched namespace only, so
		// the watchdog fails the run on any read or write it does not cover.
		{"helm-namespaced", func(t *testing.T) []*unstructured.Unstructured {
			return helmTemplate(t, "rbac.namespaced=true", "watchNamespaces={"+storyNS+"}")
		}},
	}
	for _, f := range flavors {
		if !t.Run(f.name, func(t *testing.T) { runFlavor(t, f.name, f.render(t), img) }) {
			return
		}
	}
}

// testImage checks the image itself: who its entrypoint runs as, what it holds, its size.
func testImage(t *testing.T) *imageConfig {
	defer step(t, "image "+*image+": user, contents, size")()
	img, err := inspectImage(*image)
	if err != nil {
		fatalf(t, "%v (build it with `make test-e2e` or `make docker-build IMG=%s`)", err, *image)
	}
	uid, _, _ := strings.Cut(img.Config.User, ":")
	if uid != "65532" {
		errorf(t, "the image runs as user %q, want 65532 (distroless nonroot): USER in the Dockerfile", img.Config.User)
	}
	if !slices.Equal(img.Config.Entrypoint, []string{"/manager"}) || len(img.Config.Cmd) != 0 {
		errorf(t, "entrypoint %q cmd %q, want [/manager] and no cmd", img.Config.Entrypoint, img.Config.Cmd)
	}
	files, err := exportImage(*image)
	if err != nil {
		fatal(t, err)
	}
	if !slices.Equal(files.executables, []string{"/manager"}) {
		errorf(t, "executables in the image: %v, want only /manager (no shell, no tools)", files.executables)
	}
	if len(files.unexpected) > 0 {
		errorf(t, "the image holds files beyond the binary, certificates and tzdata: %v", files.unexpected)
	}
	if files.counts["CA certificates"] == 0 {
		t.Error("the image has no CA certificates: the manager could not verify https://api.tryfinch.com")
	}
	if files.counts["tzdata"] == 0 {
		t.Error("the image has no tzdata (/usr/share/zoneinfo)")
	}
	if files.counts["license"] == 0 {
		t.Error("the image has no /LICENSE (COPY it in the Dockerfile)")
	}
	// The OCI labels a registry UI and scanners read (make docker-build stamps them).
	for _, l := range []string{"org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.source", "org.opencontainers.image.created"} {
		if img.Config.Labels[l] == "" {
			errorf(t, "the image has no label %s", l)
		}
	}
	if got := img.Config.Labels["org.opencontainers.image.licenses"]; got != "Apache-2.0" {
		errorf(t, "label org.opencontainers.image.licenses = %q, want Apache-2.0", got)
	}
	if static, err := staticELF(files.binary); err != nil || !static {
		errorf(t, "/manager is not a static ELF binary (static=%v, %v): CGO_ENABLED=0 in the Dockerfile", static, err)
	}
	logf("entrypoint %v as user %s; /manager %.1f MiB, static", img.Config.Entrypoint, img.Config.User, float64(len(files.binary))/(1<<20))
	var groups []string
	for _, a := range allowedFiles {
		if n := files.counts[a.group]; n > 0 {
			groups = append(groups, fmt.Sprintf("%s %d", a.group, n))
		}
	}
	logf("files: %s", strings.Join(groups, ", "))
	logf("image size %.1f MiB", float64(img.Size)/(1<<20))
	return img
}

// helmTemplate renders the chart with the given --set values, for the
// Kubernetes release the tests run (K8S_VERSION in hack/tools.versions; the
// chart's kubeVersion refuses helm's built-in default when bin/helm lacks a
// stamped one). Metrics stay plain HTTP here, as the e2e scrapes them
// directly; internal/operator's TestSecureMetrics covers metrics.secure.
func helmTemplate(t *testing.T, set ...string) []*unstructured.Unstructured {
	kubeVersion := "1.37.2"
	if raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "hack", "tools.versions")); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "K8S_VERSION" {
				kubeVersion = f[2]
			}
		}
	}
	args := []string{"template", helmName, filepath.Join(testenv.RepoRoot(), "charts", "finch-operator"), "--namespace", helmNS,
		"--kube-version", kubeVersion, "--set", "metrics.secure=false"}
	for _, v := range set {
		args = append(args, "--set", v)
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(*helmBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		fatalf(t, "helm template: %v: %s", err, errb.String())
	}
	return decode(t, out.Bytes())
}

// e2e is one install flavor's world: control plane, simulator, replicas.
type e2e struct {
	flavor     string
	dir        string
	kubectl    string
	kubeconfig string
	apiHost    string
	apiPort    string
	installNS  string
	pod        *Pod
	saDir      string
	sim        *finchsim.Sim
	simURL     string
	clientID   string
	replicas   []*replica
	browser    *http.Client
}

func runFlavor(t *testing.T, flavor string, objs []*unstructured.Unstructured, img *imageConfig) {
	e := &e2e{flavor: flavor, dir: filepath.Join(*logRoot, flavor)}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		fatal(t, err)
	}
	jar, _ := cookiejar.New(nil)
	e.browser = &http.Client{Timeout: 30 * time.Second, Jar: jar}

	e.startControlPlane(t)
	e.install(t, objs, img)
	e.startSim(t)
	e.applySamples(t)

	r1 := e.startReplica(t, 0)
	e.checkProbesAndMetrics(t, r1)
	e.storyAppReady(t)
	e.storySessions(t)
	acmeConn := e.storyRedirect(t, "acme")
	e.storyEmbedded(t, "globex")
	e.storyRedirect(t, "initech")
	e.storyReauth(t, "acme", acmeConn, r1)
	e.checkLease(t, r1)
	e.checkContainer(t, r1)

	r2 := e.startReplica(t, 1)
	e.checkProbesAndMetrics(t, r2)
	e.storySecondReplica(t, r1, r2)
	e.storyFailover(t, r1, r2)
	e.storyDisconnect(t, "initech")
	e.checkContainer(t, r2)
	e.stopAll(t)
}

// --- control plane and install ----------------------------------------------------------------

func (e *e2e) startControlPlane(t *testing.T) {
	defer step(t, e.flavor+": start kube-apiserver and etcd (envtest)")()
	env, err := testenv.New()
	if err != nil {
		fatal(t, err)
	}
	// The CRDs come from the install artifacts under test, not config/crd.
	env.CRDDirectoryPaths = nil
	env.ErrorIfCRDPathMissing = false
	cfg, err := testenv.Start(env)
	if err != nil {
		fatalf(t, "start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			errorf(t, "stop envtest: %v", err)
		}
	})
	u, err := url.Parse(cfg.Host)
	if err != nil {
		fatal(t, err)
	}
	e.apiHost, e.apiPort, _ = net.SplitHostPort(u.Host)
	admin, err := env.ControlPlane.AddUser(envtest.User{Name: "e2e-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		fatal(t, err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		fatal(t, err)
	}
	e.kubeconfig = filepath.Join(e.dir, "admin.kubeconfig")
	if err := os.WriteFile(e.kubeconfig, kc, 0o600); err != nil {
		fatal(t, err)
	}
	e.kubectl = filepath.Join(env.BinaryAssetsDirectory, "kubectl")
	if _, err := os.Stat(e.kubectl); err != nil {
		e.kubectl = "kubectl"
	}
	// The ServiceAccount's CA file is the API server's serving CA.
	e.saDir = filepath.Join(e.dir, "serviceaccount")
	if err := os.MkdirAll(e.saDir, 0o755); err != nil {
		fatal(t, err)
	}
	if err := os.WriteFile(filepath.Join(e.saDir, "ca.crt"), cfg.CAData, 0o644); err != nil {
		fatal(t, err)
	}
	logf("API server %s", cfg.Host)
}

// install applies everything the artifacts hold but the Deployment (there is
// no kubelet: the test runs its Pod) and mints the ServiceAccount's token.
func (e *e2e) install(t *testing.T, objs []*unstructured.Unstructured, img *imageConfig) {
	defer step(t, e.flavor+": apply CRDs, namespace, ServiceAccount, RBAC; mint the ServiceAccount token")()
	var dep *appsv1.Deployment
	var rest []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			if dep != nil {
				fatal(t, "the artifacts hold more than one Deployment")
			}
			dep = &appsv1.Deployment{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, dep); err != nil {
				fatal(t, err)
			}
			continue
		}
		rest = append(rest, o)
	}
	if dep == nil {
		fatal(t, "the artifacts hold no Deployment")
	}
	e.installNS = dep.Namespace
	pod, err := FromDeployment(dep, containerN, ImageConfig{User: img.Config.User})
	if err != nil {
		fatalf(t, "the Deployment's Pod spec: %v", err)
	}
	e.pod = pod
	hasNS := slices.ContainsFunc(rest, func(o *unstructured.Unstructured) bool {
		return o.GetKind() == "Namespace" && o.GetName() == e.installNS
	})
	if !hasNS {
		// Helm charts leave the namespace to `helm install --create-namespace`.
		e.mustKubectl(t, nil, "create", "namespace", e.installNS)
	}
	// Namespaces and CRDs first, so everything that lives in them can be created.
	slices.SortStableFunc(rest, func(a, b *unstructured.Unstructured) int { return applyOrder(a) - applyOrder(b) })
	var kinds []string
	for _, o := range rest {
		kinds = append(kinds, o.GetKind()+"/"+o.GetName())
	}
	e.mustKubectl(t, encode(t, rest), "apply", "--server-side", "-f", "-")
	e.mustKubectl(t, nil, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/finchapps.finch.connectops.dev", "crd/finchconnections.finch.connectops.dev")
	logf("applied %d objects: %s", len(rest), strings.Join(kinds, ", "))

	token := strings.TrimSpace(string(e.mustKubectl(t, nil, "create", "token", pod.ServiceAccount, "-n", e.installNS, "--duration=2h")))
	if err := os.WriteFile(filepath.Join(e.saDir, "token"), []byte(token), 0o644); err != nil {
		fatal(t, err)
	}
	if err := os.WriteFile(filepath.Join(e.saDir, "namespace"), []byte(e.installNS), 0o644); err != nil {
		fatal(t, err)
	}
	logf("TokenRequest for ServiceAccount %s/%s (the token is not shown)", e.installNS, pod.ServiceAccount)
}

func applyOrder(o *unstructured.Unstructured) int {
	switch o.GetKind() {
	case "Namespace":
		return 0
	case "CustomResourceDefinition":
		return 1
	default:
		return 2
	}
}

func (e *e2e) startSim(t *testing.T) {
	defer step(t, e.flavor+": start the Finch simulator")()
	lf, err := os.Create(filepath.Join(e.dir, "finchsim.log"))
	if err != nil {
		fatal(t, err)
	}
	t.Cleanup(func() { _ = lf.Close() })
	e.sim = finchsim.New(finchsim.Options{Logf: func(format string, args ...any) { fmt.Fprintf(lf, format+"\n", args...) }})
	creds := sampleSecret(t, "finch-credentials")
	e.clientID = creds["client_id"]
	e.sim.AddApp(finchsim.AppConfig{
		ClientID: e.clientID, ClientSecret: creds["client_secret"],
		WebhookURL:    e.inboundURL(0) + "/webhooks/" + storyNS + "/" + appName,
		WebhookSecret: sampleSecret(t, "finch-webhook")["webhook_secret"],
	})
	e.simURL = e.sim.Start()
	t.Cleanup(e.sim.Close)
	logf("simulator %s; webhooks to %s", e.simURL, e.inboundURL(0))
}

// inboundURL is replica i's inbound server, on the port the manifest names.
func (e *e2e) inboundURL(i int) string {
	return fmt.Sprintf("http://%s:%d", podIPs[i], e.port(nil, "inbound"))
}

func (e *e2e) port(t *testing.T, name string) int32 {
	p, ok := e.pod.Ports[name]
	if !ok && t != nil {
		fatalf(t, "the Deployment's container declares no port named %q", name)
	}
	return p
}

// applySamples applies the demo samples (hack/demo/samples) with the FinchApp pointed at the
// simulator and at replica 0's inbound server.
func (e *e2e) applySamples(t *testing.T) {
	defer step(t, e.flavor+": apply hack/demo/samples (FinchApp default, its Secrets, FinchConnections)")()
	var objs []*unstructured.Unstructured
	for _, o := range samples(t) {
		if o.GetKind() == "FinchApp" {
			_ = unstructured.SetNestedField(o.Object, e.simURL, "spec", "apiURL")
			_ = unstructured.SetNestedField(o.Object, e.inboundURL(0), "spec", "publicURL")
		}
		objs = append(objs, o)
	}
	e.mustKubectl(t, encode(t, objs), "apply", "-n", storyNS, "-f", "-")
	logf("FinchApp %s: apiURL %s, publicURL %s", appName, e.simURL, e.inboundURL(0))
}

// --- replicas -----------------------------------------------------------------------------------

func (e *e2e) startReplica(t *testing.T, i int) *replica {
	defer step(t, fmt.Sprintf("%s: run replica %d as the Deployment's Pod (Pod IP %s)", e.flavor, i+1, podIPs[i]))()
	name := fmt.Sprintf("finch-e2e-%s-%d", e.flavor, i+1)
	// On the host network a port someone else holds (a wildcard listener)
	// would look like the manager failing to start; say so instead.
	for pname, port := range e.pod.Ports {
		l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", podIPs[i], port))
		if err != nil {
			fatalf(t, "port %s (%d) on %s is taken by another process, so replica %d cannot bind it: %v", pname, port, podIPs[i], i+1, err)
		}
		_ = l.Close()
	}
	// The manifests let the manager call only api.tryfinch.com; this
	// cluster's Finch is the simulator (the Pod's args, then this one, which
	// wins as the last).
	pod := *e.pod
	sim, err := url.Parse(e.simURL)
	if err != nil {
		fatal(t, err)
	}
	pod.Args = append(slices.Clone(e.pod.Args), "--finch-api-hosts="+sim.Host)
	r := startReplica(t, &pod, *image, name, podIPs[i], e.saDir, e.apiHost, e.apiPort, e.dir)
	e.replicas = append(e.replicas, r)
	if e.pod.Readiness == nil {
		fatal(t, "the Deployment's container has no readiness probe")
	}
	probe := fmt.Sprintf("http://%s:%d%s", r.ip, e.pod.Readiness.Port, e.pod.Readiness.Path)
	e.await(t, "replica "+name+" ready ("+probe+")", func() (bool, string) {
		code, _, err := get(probe)
		return code == http.StatusOK, fmt.Sprintf("%d %v", code, err)
	})
	// /readyz can answer before the inbound listener is up.
	e.await(t, "replica "+name+" inbound port open", func() (bool, string) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", r.ip, e.port(t, "inbound")), time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err == nil, fmt.Sprint(err)
	})
	st, err := r.procStatus()
	if err != nil {
		fatalf(t, "read the replica's process status: %v", err)
	}
	wantUID := strings.Split(e.pod.User, ":")
	for k, want := range map[string]string{"Uid": wantUID[0], "Gid": wantUID[1]} {
		if f := strings.Fields(st[k]); len(f) == 0 || f[0] != want {
			errorf(t, "the manager runs with %s %q, want %s (the manifest's / image's user %s)", k, st[k], want, e.pod.User)
		}
	}
	if slices.Contains(e.pod.CapDrop, "ALL") && len(e.pod.CapAdd) == 0 && st["CapEff"] != "0000000000000000" {
		errorf(t, "the manager has effective capabilities %s, want none (capabilities.drop: [ALL])", st["CapEff"])
	}
	if e.pod.NoNewPrivileges && st["NoNewPrivs"] != "1" {
		errorf(t, "NoNewPrivs = %q, want 1 (allowPrivilegeEscalation: false)", st["NoNewPrivs"])
	}
	if e.pod.Seccomp == "" && st["Seccomp"] != "2" {
		errorf(t, "Seccomp = %q, want 2 (filtered: seccompProfile RuntimeDefault)", st["Seccomp"])
	}
	env, err := r.environ()
	if err != nil {
		fatalf(t, "read the replica's environment: %v", err)
	}
	for _, want := range e.pod.Env {
		if !slices.Contains(env, want) {
			errorf(t, "the manager's environment lacks %s (from the manifest's env)", want)
		}
	}
	if len(e.pod.Env) > 0 {
		logf("env from the manifest: %s", strings.Join(e.pod.Env, " "))
	}
	logf("pid %s: uid %s gid %s, CapEff %s, NoNewPrivs %s, Seccomp %s; args %s",
		st["Pid"], st["Uid"], st["Gid"], st["CapEff"], st["NoNewPrivs"], st["Seccomp"], strings.Join(e.pod.CommandArgs(r.ip), " "))
	return r
}

func (e *e2e) checkProbesAndMetrics(t *testing.T, r *replica) {
	defer step(t, e.flavor+": "+r.name+": probes and metrics on the manifest's ports")()
	for _, pr := range []struct {
		kind  string
		probe *HTTPProbe
	}{{"liveness", e.pod.Liveness}, {"readiness", e.pod.Readiness}} {
		if pr.probe == nil {
			errorf(t, "the Deployment's container has no %s probe", pr.kind)
			continue
		}
		u := fmt.Sprintf("http://%s:%d%s", r.ip, pr.probe.Port, pr.probe.Path)
		code, _, err := get(u)
		if code != http.StatusOK {
			errorf(t, "%s probe %s: %d %v", pr.kind, u, code, err)
		}
		logf("%s probe %s: %d", pr.kind, u, code)
	}
	mu := fmt.Sprintf("http://%s:%d/metrics", r.ip, e.port(t, "metrics"))
	code, body, err := get(mu)
	if code != http.StatusOK || !strings.Contains(body, "finch_inbound_webhooks_total") || !strings.Contains(body, "controller_runtime_") {
		errorf(t, "metrics %s: %d %v (finch and controller-runtime series present: %v, %v)", mu, code, err,
			strings.Contains(body, "finch_inbound_webhooks_total"), strings.Contains(body, "controller_runtime_"))
	}
	logf("metrics %s: %d, %d series", mu, code, strings.Count(body, "\n")-strings.Count(body, "\n#"))
}

// --- the story ---------------------------------------------------------------------------------

func (e *e2e) storyAppReady(t *testing.T) {
	defer step(t, e.flavor+": FinchApp default becomes Ready")()
	e.await(t, "FinchApp default Ready", func() (bool, string) {
		s := e.field(t, "finchapp", appName, `{.status.conditions[?(@.type=="Ready")].status}`)
		return s == "True", "Ready=" + s
	})
	logf("callback URL %s", e.field(t, "finchapp", appName, "{.status.callbackURL}"))
}

func (e *e2e) storySessions(t *testing.T) {
	defer step(t, e.flavor+": every FinchConnection gets a Connect session (session ID and connect URL in status)")()
	for _, n := range []string{"acme", "globex", "initech"} {
		e.awaitPhase(t, n, finchv1.PhaseAwaitingConnect)
		if e.field(t, "fconn", n, "{.status.session.id}") == "" || e.field(t, "fconn", n, "{.status.session.connectURL}") == "" {
			fatalf(t, "%s is AwaitingConnect without a session ID and connect URL", n)
		}
		logf("%s: session %s", n, e.field(t, "fconn", n, "{.status.session.id}"))
	}
}

// storyRedirect opens the connect URL as the employer's browser would; Finch
// Connect redirects to the operator's callback with a code.
func (e *e2e) storyRedirect(t *testing.T, name string) string {
	defer step(t, e.flavor+": "+name+" connects through the redirect flow (callback)")()
	e.browse(t, e.field(t, "fconn", name, "{.status.session.connectURL}"))
	e.awaitPhase(t, name, finchv1.PhaseConnected)
	conn := e.field(t, "fconn", name, "{.status.connectionID}")
	tok := e.field(t, "fconn", name, "{.status.tokenSecretRef.name}")
	if conn == "" || tok == "" {
		out, _ := e.kubectlOut(nil, "get", "fconn", "-n", storyNS, name, "-o", "yaml")
		fatalf(t, "%s is Connected without connectionID (%q) or tokenSecretRef (%q):\n%s", name, conn, tok, out)
	}
	e.mustKubectl(t, nil, "get", "secret", "-n", storyNS, tok)
	logf("%s: connection %s, token in Secret %s", name, conn, tok)
	return conn
}

func (e *e2e) storyEmbedded(t *testing.T, name string) {
	defer step(t, e.flavor+": "+name+" connects through the embedded flow (code Secret)")()
	sid := e.field(t, "fconn", name, "{.status.session.id}")
	var done struct {
		Code string `json:"code"`
	}
	e.simPost(t, "/_sim/sessions/"+sid+"/complete", "", &done)
	code := fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":%q,"labels":{%q:%q}},"type":%q,"stringData":{%q:%q}}`,
		name+"-code", finchv1.ConnectionLabel, name, finchv1.CodeSecretType, finchv1.CodeKey, done.Code)
	e.mustKubectl(t, []byte(code), "apply", "-n", storyNS, "-f", "-")
	e.awaitPhase(t, name, finchv1.PhaseConnected)
	e.await(t, "code Secret "+name+"-code deleted after the exchange", func() (bool, string) {
		out, err := e.kubectlOut(nil, "get", "secret", "-n", storyNS, name+"-code", "--ignore-not-found", "-o", "name")
		return err == nil && strings.TrimSpace(string(out)) == "", string(out)
	})
	logf("%s: connection %s; code Secret consumed", name, e.field(t, "fconn", name, "{.status.connectionID}"))
}

// storyReauth: Finch flips the connection to reauth and sends a signed
// account.updated webhook; the operator issues a re-authentication session.
func (e *e2e) storyReauth(t *testing.T, name, conn string, via *replica) {
	defer step(t, e.flavor+": signed webhook (reauth) for "+name+" reaches "+via.name+"; re-authentication session")()
	before := e.metric(t, via, `finch_inbound_webhooks_total{result="accepted"}`)
	e.simPost(t, "/_sim/connections/"+conn+"/status", `{"status":"reauth"}`, nil)
	e.awaitPhase(t, name, finchv1.PhaseReauthRequired)
	e.await(t, name+" has a Reauthenticate session", func() (bool, string) {
		k := e.field(t, "fconn", name, "{.status.session.kind}")
		return k == string(finchv1.SessionReauthenticate), "kind=" + k
	})
	if after := e.metric(t, via, `finch_inbound_webhooks_total{result="accepted"}`); after <= before {
		errorf(t, "%s accepted no webhook (finch_inbound_webhooks_total{result=\"accepted\"} %v -> %v)", via.name, before, after)
	}
	e.browse(t, e.field(t, "fconn", name, "{.status.session.connectURL}"))
	e.awaitPhase(t, name, finchv1.PhaseConnected)
	if got := e.field(t, "fconn", name, "{.status.connectionID}"); got != conn {
		errorf(t, "connection ID changed across re-authentication: %s -> %s", conn, got)
	}
	logf("%s: re-authenticated, same connection %s", name, conn)
}

func (e *e2e) checkLease(t *testing.T, leader *replica) {
	defer step(t, e.flavor+": leader election holds its Lease in "+e.installNS)()
	if !slices.Contains(e.pod.Args, "--leader-elect") && !slices.Contains(e.pod.Args, "--leader-elect=true") {
		fatalf(t, "the Deployment does not pass --leader-elect (args %v)", e.pod.Args)
	}
	holders := e.leases(t)
	if len(holders) != 1 {
		fatalf(t, "Leases in %s: %v, want exactly one, held", e.installNS, holders)
	}
	if !strings.Contains(strings.ToLower(leader.logText()), "successfully acquired lease") {
		errorf(t, "%s never logged acquiring the lease", leader.name)
	}
	all := e.mustKubectl(t, nil, "get", "leases", "-A", "-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}`)
	for l := range strings.FieldsSeq(string(all)) {
		ns, _, _ := strings.Cut(l, "/")
		if ns != e.installNS && ns != "kube-system" && ns != "kube-node-lease" {
			errorf(t, "a Lease outside the install namespace: %s", l)
		}
	}
	for n, h := range holders {
		logf("Lease %s/%s held by %s", e.installNS, n, h)
	}
}

// leases maps the install namespace's Leases to their holders.
func (e *e2e) leases(t *testing.T) map[string]string {
	out := e.mustKubectl(t, nil, "get", "leases", "-n", e.installNS, "-o", `jsonpath={range .items[*]}{.metadata.name}={.spec.holderIdentity}{"\n"}{end}`)
	m := map[string]string{}
	for l := range strings.FieldsSeq(string(out)) {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

// storySecondReplica: a standby replica does not take the lease but serves
// the inbound port: a signed webhook delivered to it is acted on by the leader.
func (e *e2e) storySecondReplica(t *testing.T, r1, r2 *replica) {
	defer step(t, e.flavor+": a second replica stands by and serves the inbound port")()
	holders := e.leases(t)
	e.await(t, r2.name+" tries the lease", func() (bool, string) {
		return strings.Contains(strings.ToLower(r2.logText()), "attempting to acquire leader lease"), ""
	})
	if strings.Contains(strings.ToLower(r2.logText()), "successfully acquired lease") {
		fatalf(t, "%s acquired the lease while %s holds it", r2.name, r1.name)
	}
	if now := e.leases(t); fmt.Sprint(now) != fmt.Sprint(holders) {
		errorf(t, "the Lease changed hands when %s started: %v -> %v", r2.name, holders, now)
	}
	e.sim.SetWebhookURL(e.clientID, e.inboundURL(1)+"/webhooks/"+storyNS+"/"+appName)
	conn := e.field(t, "fconn", "globex", "{.status.connectionID}")
	before := e.metric(t, r2, `finch_inbound_webhooks_total{result="accepted"}`)
	e.simPost(t, "/_sim/connections/"+conn+"/status", `{"status":"reauth"}`, nil)
	e.awaitPhase(t, "globex", finchv1.PhaseReauthRequired)
	if after := e.metric(t, r2, `finch_inbound_webhooks_total{result="accepted"}`); after <= before {
		errorf(t, "the standby %s accepted no webhook (%v -> %v)", r2.name, before, after)
	}
	for i, r := range []*replica{r1, r2} {
		code, _, err := get(e.inboundURL(i) + "/healthz")
		if code != http.StatusOK {
			errorf(t, "%s inbound %s/healthz: %d %v", r.name, e.inboundURL(i), code, err)
		}
	}
	logf("one leader (%s); %s took globex's webhook at %s and the leader acted on it", r1.name, r2.name, e.inboundURL(1))
}

// storyFailover stops the leader as the kubelet would; the standby takes over.
func (e *e2e) storyFailover(t *testing.T, r1, r2 *replica) {
	defer step(t, e.flavor+": the leader stops (SIGTERM); the standby takes the Lease")()
	before := e.leases(t)
	e.checkContainer(t, r1)
	t0 := time.Now()
	code, err := r1.stop(e.pod.GracePeriodSeconds)
	if err != nil {
		fatal(t, err)
	}
	if code != 0 {
		errorf(t, "%s exited %d on SIGTERM, want 0 within terminationGracePeriodSeconds (%ds); log %s:\n%s",
			r1.name, code, e.pod.GracePeriodSeconds, r1.logPath, tail(r1.logText(), 20))
	}
	logf("%s stopped in %.1fs, exit %d", r1.name, time.Since(t0).Seconds(), code)
	e.await(t, r2.name+" acquires the lease", func() (bool, string) {
		return strings.Contains(strings.ToLower(r2.logText()), "successfully acquired lease"), ""
	})
	after := e.leases(t)
	if fmt.Sprint(after) == fmt.Sprint(before) {
		errorf(t, "the Lease did not change hands: %v", after)
	}
	logf("Lease now held by %v (%.1fs after the stop)", after, time.Since(t0).Seconds())
}

func (e *e2e) storyDisconnect(t *testing.T, name string) {
	defer step(t, e.flavor+": "+name+" is deleted with deletionPolicy Disconnect (by the new leader)")()
	conn := e.field(t, "fconn", name, "{.status.connectionID}")
	e.mustKubectl(t, nil, "delete", "fconn", "-n", storyNS, name, "--wait=false")
	e.await(t, "fconn/"+name+" gone", func() (bool, string) {
		out, err := e.kubectlOut(nil, "get", "fconn", "-n", storyNS, name, "--ignore-not-found", "-o", "name")
		return err == nil && strings.TrimSpace(string(out)) == "", string(out)
	})
	c, ok := e.sim.Connection(conn)
	if !ok || !c.Disconnected {
		fatalf(t, "connection %s is not disconnected at Finch (%+v)", conn, c)
	}
	logf("%s: connection %s disconnected at Finch", name, conn)
}

// checkContainer: nothing written outside the manifest's mounts, no RBAC
// denial or refused write in the log.
func (e *e2e) checkContainer(t *testing.T, r *replica) {
	t.Helper()
	if err := r.problem(); err != nil {
		fatal(t, err)
	}
	changed, err := r.diff()
	if err != nil {
		fatal(t, err)
	}
	if len(changed) > 0 {
		errorf(t, "%s changed its filesystem outside the manifest's mounts (docker diff): %v", r.name, changed)
	}
	if strings.Contains(r.logText(), "forbidden") {
		errorf(t, "%s logged 'forbidden' (log %s)", r.name, r.logPath)
	}
	logf("%s: nothing written outside the mounts, no RBAC denials in %d log lines", r.name, strings.Count(r.logText(), "\n"))
}

func (e *e2e) stopAll(t *testing.T) {
	defer step(t, e.flavor+": stop the replicas, the simulator and the control plane")()
	for _, r := range e.replicas {
		r.mu.Lock()
		done := r.stopped
		r.mu.Unlock()
		if done {
			continue
		}
		if code, err := r.stop(e.pod.GracePeriodSeconds); err != nil || code != 0 {
			errorf(t, "%s: exit %d on SIGTERM (%v)", r.name, code, err)
		}
	}
}

// --- helpers ------------------------------------------------------------------------------------

// await polls until f reports done, failing at once when a replica shows a
// problem (an RBAC denial, a refused write, an exit) and after *timeout otherwise.
func (e *e2e) await(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(*timeout)
	detail := ""
	for {
		for _, r := range e.replicas {
			if err := r.problem(); err != nil {
				fatalf(t, "while waiting for %s: %v", what, err)
			}
		}
		var ok bool
		if ok, detail = f(); ok {
			return
		}
		if time.Now().After(deadline) {
			var logs []string
			for _, r := range e.replicas {
				logs = append(logs, fmt.Sprintf("--- %s (%s)\n%s", r.name, r.logPath, tail(r.logText(), 25)))
			}
			fatalf(t, "%s did not happen within %s (last: %s)\n%s", what, *timeout, detail, strings.Join(logs, "\n"))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (e *e2e) awaitPhase(t *testing.T, name string, phase finchv1.Phase) {
	t.Helper()
	e.await(t, fmt.Sprintf("%s phase %s", name, phase), func() (bool, string) {
		p := e.field(t, "fconn", name, "{.status.phase}")
		return p == string(phase), "phase=" + p + " " + e.field(t, "fconn", name, `{.status.conditions[?(@.type=="Ready")].message}`)
	})
}

func (e *e2e) kubectlOut(stdin []byte, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.kubectl, append([]string{"--kubeconfig", e.kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

func (e *e2e) mustKubectl(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := e.kubectlOut(stdin, args...)
	if err != nil {
		fatal(t, err)
	}
	return out
}

func (e *e2e) field(t *testing.T, kind, name, path string) string {
	t.Helper()
	out, err := e.kubectlOut(nil, "get", kind, name, "-n", storyNS, "-o", "jsonpath="+path)
	if err != nil {
		fatal(t, err)
	}
	return strings.TrimSpace(string(out))
}

// browse follows a connect URL through Finch Connect's redirect to the
// callback, as the employer's browser does. The landing URL carries the code;
// it is not printed.
func (e *e2e) browse(t *testing.T, u string) {
	t.Helper()
	resp, err := e.browser.Get(u)
	if err != nil {
		fatalf(t, "open the connect URL: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	landed := resp.Request.URL
	if resp.StatusCode != http.StatusOK {
		fatalf(t, "the Connect flow ended at %s://%s%s with HTTP %d: %s", landed.Scheme, landed.Host, landed.Path, resp.StatusCode, htmlText(body))
	}
	logf("browser landed on %s://%s%s: %s", landed.Scheme, landed.Host, landed.Path, htmlText(body))
}

var tagRE = regexp.MustCompile(`<h1>(.*?)</h1>`)

func htmlText(b []byte) string {
	if m := tagRE.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return strings.TrimSpace(string(b[:min(len(b), 120)]))
}

func (e *e2e) simPost(t *testing.T, path, body string, out any) {
	t.Helper()
	resp, err := http.Post(e.simURL+path, "application/json", strings.NewReader(body))
	if err != nil {
		fatal(t, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		fatalf(t, "simulator POST %s: %d %s", path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			fatalf(t, "simulator POST %s: %v", path, err)
		}
	}
}

// metric reads a series' value from a replica's /metrics (0 when absent).
func (e *e2e) metric(t *testing.T, r *replica, series string) float64 {
	t.Helper()
	u := fmt.Sprintf("http://%s:%d/metrics", r.ip, e.port(t, "metrics"))
	code, body, err := get(u)
	if code != http.StatusOK {
		fatalf(t, "metrics %s: %d %v", u, code, err)
	}
	// series is name{label="value",...}: the sum of every series of name
	// that has those labels (the business series also carry namespace and
	// app).
	name, matchers, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
	total := 0.0
	for l := range strings.SplitSeq(body, "\n") {
		rest, ok := strings.CutPrefix(l, name)
		if !ok || rest == "" || rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		labels, v := "", rest
		if rest[0] == '{' {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				continue
			}
			labels, v = rest[1:end], rest[end+1:]
		}
		all := true
		for m := range strings.SplitSeq(matchers, ",") {
			all = all && (m == "" || strings.Contains(","+labels+",", ","+m+","))
		}
		if all {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			total += f
		}
	}
	return total
}

func get(u string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func samples(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "hack", "demo", "samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		fatalf(t, "no samples in hack/demo/samples: %v", err)
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			fatal(t, err)
		}
		out = append(out, decode(t, b)...)
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
	fatalf(t, "no Secret %s in hack/demo/samples", name)
	return nil
}

func decode(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.DecodeManifests(data)
	if err != nil {
		fatal(t, err)
	}
	return objs
}

func encode(t *testing.T, objs []*unstructured.Unstructured) []byte {
	t.Helper()
	data, err := testenv.EncodeManifests(objs)
	if err != nil {
		fatal(t, err)
	}
	return data
}
