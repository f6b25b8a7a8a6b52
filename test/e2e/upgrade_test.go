//go:build e2e

package e2e

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/scheme"
	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// TestUpgrade: "an upgrade loses nothing". It installs a release with helm
// (the working tree's chart, or a released one: -from-chart), brings
// connections to AwaitingConnect, Connected and ReauthRequired, then runs
// `helm upgrade` to the working tree's chart with another image and
// replicaCount 2 while employers keep handing over codes and Finch keeps
// delivering signed webhooks. There is no kube-controller-manager or
// kubelet: the test plays both for the rollout, reading the Deployment the
// API server holds (its Pod template, replicas and strategy), and plays the
// Service in front of the Pods (routing to Ready, not-yet-removed endpoints).
var (
	fromChart     = flag.String("from-chart", "", "the chart upgraded from: a directory or an oci:// reference (default: the working tree's chart)")
	fromVersion   = flag.String("from-version", "", "helm --version for -from-chart")
	fromImage     = flag.String("from-image", "", "the image upgraded from (default: -image with the working tree's chart; the chart's own image with -from-chart)")
	toImage       = flag.String("to-image", "", "the image upgraded to (default: -image retagged <tag>-upgrade, so the Pod template changes and every container is replaced)")
	fromHelmFlags = flag.String("from-helm-flags", "", "extra flags for `helm install` of -from-chart, space-separated (for example --plain-http)")
	endpointLag   = flag.Duration("endpoint-lag", 2*time.Second, "how long a deleted Pod still receives traffic: EndpointSlice propagation to kube-proxy or the Ingress controller, which runs in parallel with the kubelet's preStop and SIGTERM")
	upgradeCodes  = flag.Int("upgrade-codes", 12, "FinchConnections kept AwaitingConnect whose codes are handed over during the rollout, one every five seconds")
)

const (
	leaseName = "finch-operator.connectops.dev" // the chart's leaderElection.id
	tick      = time.Second                     // webhooks: five per tick; codes: one per five ticks
)

func TestUpgrade(t *testing.T) {
	started := time.Now()
	u := &upgrade{e2e: &e2e{flavor: "upgrade", dir: filepath.Join(*logRoot, "upgrade")}, nextIP: 21}
	e := u.e2e
	if err := os.RemoveAll(e.dir); err != nil {
		fatal(t, err)
	}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		fatal(t, err)
	}
	defer func() {
		fmt.Printf("\n==> summary (%s in all)\n", time.Since(started).Round(time.Second))
		for _, s := range summary {
			fmt.Println("  " + s)
		}
	}()
	jar, _ := cookiejar.New(nil)
	e.browser = &http.Client{Timeout: 60 * time.Second, Jar: jar}
	u.images(t)
	e.startControlPlane(t)
	u.connect(t)
	u.startService(t)
	u.startSim(t)
	u.helmInstall(t)
	u.prepare(t)
	u.upgradeUnderTraffic(t)
	u.check(t)
	e.stopAll(t)
	fmt.Printf("\nupgrade: %s\n", u.report)
	t.Logf("upgrade: %s", u.report)
}

type upgrade struct {
	*e2e
	c        client.Client
	from, to string // images
	chartDir string // the working tree's chart
	svc      *service
	nextIP   int
	pods     []*pod // every Pod the rollouts started
	dep      *appsv1.Deployment

	acmeConn, globexConn string
	initechSession       string
	pool                 []poolConn // AwaitingConnect before the upgrade
	oldLeader            string     // holderIdentity before the upgrade

	mu        sync.Mutex
	handed    []handover
	reauthAt  time.Time // when acme was flipped to reauth during the rollout
	leaderSig time.Time // SIGTERM to the old leader
	leaderDel time.Time // the old leader's deletion (preStop starts, endpoint removal begins)
	released  time.Time // first seen without the old leader as holder (it released the Lease)
	report    string
}

type poolConn struct {
	name, session, connectURL string
	embedded                  bool
}

type handover struct {
	conn, via string
	at        time.Time
	status    int // the browser's final HTTP status (redirect flow)
	err       string
}

func (u *upgrade) images(t *testing.T) {
	defer step(t, "upgrade: images (from, to)")()
	u.chartDir = filepath.Join(testenv.RepoRoot(), "charts", "finch-operator")
	u.from = *fromImage
	if u.from == "" && *fromChart == "" {
		u.from = *image
	}
	u.to = *toImage
	if u.to == "" {
		repo, tag := splitImage(*image)
		u.to = repo + ":" + tag + "-upgrade"
		if _, err := docker("tag", *image, u.to); err != nil {
			fatalf(t, "retag %s as %s: %v", *image, u.to, err)
		}
		t.Cleanup(func() { _, _ = docker("rmi", u.to) })
	}
	for _, img := range []string{u.from, u.to} {
		if img != "" {
			ensureImage(t, img)
		}
	}
	logf("from %s (chart %s %s), to %s (chart %s)", orDefault(u.from, "the chart's image"), orDefault(*fromChart, u.chartDir), *fromVersion, u.to, u.chartDir)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// splitImage splits repo[:tag] (a registry host may carry a port).
func splitImage(img string) (repo, tag string) {
	i := strings.LastIndex(img, ":")
	if i < 0 || strings.Contains(img[i:], "/") {
		return img, "latest"
	}
	return img[:i], img[i+1:]
}

// ensureImage pulls img unless the engine has it (imagePullPolicy IfNotPresent).
func ensureImage(t *testing.T, img string) {
	t.Helper()
	if _, err := docker("image", "inspect", img); err == nil {
		return
	}
	if _, err := docker("pull", img); err != nil {
		fatalf(t, "pull %s: %v", img, err)
	}
}

func (u *upgrade) connect(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", u.kubeconfig)
	if err != nil {
		fatal(t, err)
	}
	if u.c, err = client.New(cfg, client.Options{Scheme: scheme.Scheme}); err != nil {
		fatal(t, err)
	}
}

// --- the Service -------------------------------------------------------------------------------

// service stands in for the Service (and the Ingress in front of it): it
// routes each request to one of the Pods whose readiness probe passes and
// whose deletion has not reached it yet, and records every answer.
type service struct {
	mu    sync.Mutex
	eps   []*pod
	next  int
	hits  []hit
	url   string
	trans *http.Transport
}

type hit struct {
	route, backend string
	status         int
	at             time.Time
}

func (u *upgrade) startService(t *testing.T) {
	defer step(t, "upgrade: start the Service stand-in (routes to Ready endpoints)")()
	s := &service{trans: &http.Transport{DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal(t, err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	s.url = "http://" + l.Addr().String()
	u.svc = s
	logf("Service at %s (endpoint removal reaches it %s after a Pod's deletion)", s.url, *endpointLag)
}

func routeOf(p string) string {
	switch {
	case strings.HasPrefix(p, "/webhooks/"), strings.HasPrefix(p, "/cluster/webhooks/"):
		return "webhook"
	case strings.HasPrefix(p, "/callback/"), strings.HasPrefix(p, "/cluster/callback/"):
		return "callback"
	}
	return "other"
}

func (s *service) pick() *pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ready []*pod
	for _, p := range s.eps {
		if p.routable() {
			ready = append(ready, p)
		}
	}
	if len(ready) == 0 {
		return nil
	}
	s.next++
	return ready[s.next%len(ready)]
}

func (s *service) record(route, backend string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits = append(s.hits, hit{route: route, backend: backend, status: status, at: time.Now()})
}

func (s *service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := routeOf(r.URL.Path)
	p := s.pick()
	if p == nil {
		// What an Ingress controller answers with no endpoint.
		s.record(route, "", http.StatusServiceUnavailable)
		http.Error(w, "no endpoints", http.StatusServiceUnavailable)
		return
	}
	target := &url.URL{Scheme: "http", Host: fmt.Sprintf("%s:%d", p.ip, p.spec.Ports["inbound"])}
	rp := &httputil.ReverseProxy{
		Transport: s.trans,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			s.record(route, p.name, resp.StatusCode)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			// A refused or reset connection: what nginx answers (502).
			s.record(route, p.name+": "+err.Error(), http.StatusBadGateway)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}

func (s *service) add(p *pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eps = append(s.eps, p)
}

func (s *service) snapshot() []hit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hits)
}

// --- Pods: the ReplicaSets' Pods, run as the kubelet would ---------------------------------

type pod struct {
	*replica
	rs    string // "old" or "new"
	spec  *Pod
	image string

	mu          sync.Mutex
	readySince  time.Time // zero: not Ready
	deleted     bool      // deletionTimestamp set: the ReplicaSet no longer counts it
	unrouted    bool      // the endpoint removal reached the Service
	done        chan struct{}
	exitCode    int
	stopErr     error
	stopProbing chan struct{}
}

func (p *pod) routable() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.readySince.IsZero() && !p.unrouted
}

func (p *pod) ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.readySince.IsZero()
}

// available is Ready for at least minReady (the Deployment's minReadySeconds).
func (p *pod) available(minReady time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.readySince.IsZero() && time.Since(p.readySince) >= minReady
}

// podSpec reads the Deployment's Pod template, as the kubelet would run it.
func (u *upgrade) podSpec(t *testing.T, dep *appsv1.Deployment) (*Pod, string) {
	t.Helper()
	img := ""
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == containerN {
			img = c.Image
		}
	}
	ensureImage(t, img)
	cfg, err := inspectImage(img)
	if err != nil {
		fatal(t, err)
	}
	spec, err := FromDeployment(dep, containerN, ImageConfig{User: cfg.Config.User})
	if err != nil {
		fatalf(t, "the Deployment's Pod spec: %v", err)
	}
	return spec, img
}

// startPod runs one Pod of the ReplicaSet rs and probes its readiness as the kubelet does.
func (u *upgrade) startPod(t *testing.T, rs string, spec *Pod, img string) *pod {
	t.Helper()
	ip := fmt.Sprintf("127.0.0.%d", u.nextIP)
	u.nextIP++
	name := fmt.Sprintf("finch-upgrade-%s-%d", rs, len(u.pods)+1)
	for pname, port := range spec.Ports {
		l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
		if err != nil {
			fatalf(t, "port %s (%d) on %s is taken by another process: %v", pname, port, ip, err)
		}
		_ = l.Close()
	}
	r := startReplica(t, spec, img, name, ip, u.saDir, u.apiHost, u.apiPort, u.dir)
	p := &pod{replica: r, rs: rs, spec: spec, image: img, done: make(chan struct{}), stopProbing: make(chan struct{})}
	u.pods = append(u.pods, p)
	u.replicas = append(u.replicas, r)
	u.svc.add(p)
	go p.probe()
	logf("%s: Pod %s (%s) on %s", rs, name, img, ip)
	return p
}

// probe runs the readiness probe on the manifest's schedule.
func (p *pod) probe() {
	pr := p.spec.Readiness
	if pr == nil {
		p.mu.Lock()
		p.readySince = time.Now()
		p.mu.Unlock()
		return
	}
	u := fmt.Sprintf("http://%s:%d%s", p.ip, pr.Port, pr.Path)
	wait := time.Duration(pr.InitialDelaySeconds) * time.Second
	failures := 0
	for {
		select {
		case <-p.stopProbing:
			return
		case <-time.After(wait):
		}
		wait = time.Duration(pr.PeriodSeconds) * time.Second
		code, _, _ := get(u)
		p.mu.Lock()
		if code >= 200 && code < 400 {
			failures = 0
			if p.readySince.IsZero() {
				p.readySince = time.Now()
			}
		} else if failures++; failures >= int(pr.FailureThreshold) {
			p.readySince = time.Time{}
		}
		p.mu.Unlock()
	}
}

// terminate deletes the Pod: the endpoint removal reaches the Service after
// -endpoint-lag while the kubelet runs the preStop hook, then SIGTERM, and
// SIGKILL when the grace period runs out
// (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination).
func (u *upgrade) terminate(p *pod) {
	p.mu.Lock()
	p.deleted = true
	p.mu.Unlock()
	deleted := time.Now()
	isLeader := p.rs == "old" && strings.Contains(strings.ToLower(p.logText()), "successfully acquired lease")
	if isLeader {
		u.mu.Lock()
		u.leaderDel = deleted
		u.mu.Unlock()
	}
	go func() {
		time.Sleep(*endpointLag)
		p.mu.Lock()
		p.unrouted = true
		p.mu.Unlock()
	}()
	go func() {
		defer close(p.done)
		close(p.stopProbing)
		grace := p.spec.GracePeriodSeconds
		if s := min(p.spec.PreStopSleepSeconds, grace); s > 0 {
			time.Sleep(time.Duration(s) * time.Second)
			grace -= s
		}
		if isLeader {
			u.mu.Lock()
			u.leaderSig = time.Now()
			u.mu.Unlock()
		}
		code, err := p.stop(grace)
		p.mu.Lock()
		p.exitCode, p.stopErr = code, err
		p.mu.Unlock()
		logf("%s: %s stopped %.1fs after its deletion (preStop sleep %ds), exit %d %v",
			p.rs, p.name, time.Since(deleted).Seconds(), p.spec.PreStopSleepSeconds, code, err)
	}()
}

// rollout does what the Deployment and ReplicaSet controllers and the
// kubelet do for dep: Pods of its template up to spec.replicas, the other
// template's Pods down, within the strategy's maxSurge and maxUnavailable
// (pkg/controller/deployment/rolling.go: reconcileNewReplicaSet,
// reconcileOldReplicaSets).
func (u *upgrade) rollout(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	spec, img := u.podSpec(t, dep)
	for _, p := range u.pods {
		if p.rs == "new" {
			p.rs = "old"
		}
	}
	desired := int(ptrOr(dep.Spec.Replicas, 1))
	minReady := time.Duration(dep.Spec.MinReadySeconds) * time.Second
	surge, unavail := 0, 0
	switch dep.Spec.Strategy.Type {
	case appsv1.RecreateDeploymentStrategyType:
	default:
		ru := dep.Spec.Strategy.RollingUpdate
		ms, mu := intstr.FromString("25%"), intstr.FromString("25%")
		if ru != nil && ru.MaxSurge != nil {
			ms = *ru.MaxSurge
		}
		if ru != nil && ru.MaxUnavailable != nil {
			mu = *ru.MaxUnavailable
		}
		var err error
		if surge, err = intstr.GetScaledValueFromIntOrPercent(&ms, desired, true); err != nil {
			fatal(t, err)
		}
		if unavail, err = intstr.GetScaledValueFromIntOrPercent(&mu, desired, false); err != nil {
			fatal(t, err)
		}
		if surge == 0 && unavail == 0 {
			unavail = 1 // as the Deployment controller does
		}
	}
	logf("rollout: %s, replicas %d, maxSurge %d, maxUnavailable %d, minReadySeconds %d; Pods run %s",
		orDefault(string(dep.Spec.Strategy.Type), "RollingUpdate"), desired, surge, unavail, dep.Spec.MinReadySeconds, img)
	deadline := time.Now().Add(5 * *timeout)
	for {
		var old, cur []*pod
		for _, p := range u.pods {
			p.mu.Lock()
			deleted := p.deleted
			p.mu.Unlock()
			switch {
			case deleted:
			case p.rs == "old":
				old = append(old, p)
			default:
				cur = append(cur, p)
			}
		}
		avail := 0
		for _, p := range cur {
			if p.available(minReady) {
				avail++
			}
		}
		if len(old) == 0 && len(cur) == desired && avail == desired {
			break
		}
		if dep.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
			for _, p := range old {
				u.terminate(p)
				<-p.done
			}
			for len(cur) < desired {
				cur = append(cur, u.startPod(t, "new", spec, img))
			}
		} else {
			for len(cur) < desired && len(old)+len(cur) < desired+surge {
				cur = append(cur, u.startPod(t, "new", spec, img))
			}
			oldAvail := 0
			for _, p := range old {
				if p.available(minReady) {
					oldAvail++
				}
			}
			// Old Pods that may go without dropping below replicas - maxUnavailable available.
			down := oldAvail + avail - (desired - unavail)
			// Not-ready old Pods go first and cost no availability.
			slices.SortFunc(old, func(a, b *pod) int { return boolInt(a.ready()) - boolInt(b.ready()) })
			for _, p := range old {
				if !p.available(minReady) {
					u.terminate(p)
				} else if down > 0 {
					u.terminate(p)
					down--
				}
			}
		}
		for _, r := range u.replicas {
			if err := r.problem(); err != nil {
				fatalf(t, "during the rollout: %v", err)
			}
		}
		if time.Now().After(deadline) {
			fatalf(t, "the rollout did not finish within %s: %d old, %d new (%d available)", 5**timeout, len(old), len(cur), avail)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range u.pods {
		p.mu.Lock()
		deleted := p.deleted
		p.mu.Unlock()
		if deleted {
			<-p.done
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func ptrOr[T any](p *T, d T) T {
	if p == nil {
		return d
	}
	return *p
}

// --- helm ----------------------------------------------------------------------------------------

func (u *upgrade) helm(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, *helmBin, append(args, "--kubeconfig", u.kubeconfig, "--namespace", helmNS)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		fatalf(t, "helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	logf("helm %s", strings.Join(args, " "))
	return string(out)
}

// values are the --set flags both releases share: the image (unless the
// chart's own), replicas, and the simulator as the Finch API host.
func (u *upgrade) values(img string, replicas int) []string {
	sim, _ := url.Parse(u.simURL)
	v := []string{"--set", fmt.Sprintf("replicaCount=%d", replicas), "--set-json", fmt.Sprintf("finchAPIHosts=[%q]", sim.Host)}
	if img != "" {
		repo, tag := splitImage(img)
		v = append(v, "--set", "image.repository="+repo, "--set", "image.tag="+tag)
	}
	return v
}

func (u *upgrade) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	var list appsv1.DeploymentList
	if err := u.c.List(context.Background(), &list, client.InNamespace(helmNS)); err != nil {
		fatal(t, err)
	}
	if len(list.Items) != 1 {
		fatalf(t, "%d Deployments in %s, want 1", len(list.Items), helmNS)
	}
	return &list.Items[0]
}

func (u *upgrade) helmInstall(t *testing.T) {
	defer step(t, "upgrade: helm install the release upgraded from (replicaCount 1) and run its Pod")()
	chart := orDefault(*fromChart, u.chartDir)
	args := []string{"install", helmName, chart, "--create-namespace"}
	if *fromVersion != "" {
		args = append(args, "--version", *fromVersion)
	}
	args = append(args, strings.Fields(*fromHelmFlags)...)
	u.helm(t, append(args, u.values(u.from, 1)...)...)
	u.mustKubectl(t, nil, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/finchapps.finch.connectops.dev", "crd/finchconnections.finch.connectops.dev")
	u.dep = u.deployment(t)
	spec, _ := u.podSpec(t, u.dep)
	u.pod = spec
	u.installNS = helmNS
	token := strings.TrimSpace(string(u.mustKubectl(t, nil, "create", "token", spec.ServiceAccount, "-n", helmNS, "--duration=2h")))
	for f, v := range map[string]string{"token": token, "namespace": helmNS} {
		if err := os.WriteFile(filepath.Join(u.saDir, f), []byte(v), 0o644); err != nil {
			fatal(t, err)
		}
	}
	u.rollout(t, u.dep)
}

// --- the story before the upgrade ----------------------------------------------------------------

func (u *upgrade) startSim(t *testing.T) {
	defer step(t, "upgrade: start the Finch simulator (webhooks to the Service)")()
	lf, err := os.Create(filepath.Join(u.dir, "finchsim.log"))
	if err != nil {
		fatal(t, err)
	}
	t.Cleanup(func() { _ = lf.Close() })
	u.sim = finchsim.New(finchsim.Options{Logf: func(format string, args ...any) { fmt.Fprintf(lf, format+"\n", args...) }})
	creds := sampleSecret(t, "finch-credentials")
	u.clientID = creds["client_id"]
	u.sim.AddApp(finchsim.AppConfig{
		ClientID: u.clientID, ClientSecret: creds["client_secret"],
		WebhookURL:    u.svc.url + "/webhooks/" + storyNS + "/" + appName,
		WebhookSecret: sampleSecret(t, "finch-webhook")["webhook_secret"],
	})
	u.simURL = u.sim.Start()
	t.Cleanup(u.sim.Close)
	logf("simulator %s", u.simURL)
}

// prepare applies the samples and the pool, and brings acme and globex to
// Connected, initech to ReauthRequired, the pool to AwaitingConnect.
func (u *upgrade) prepare(t *testing.T) {
	defer step(t, "upgrade: connections AwaitingConnect, Connected (redirect, code Secret), ReauthRequired")()
	var objs []*unstructured.Unstructured
	for _, o := range samples(t) {
		if o.GetKind() == "FinchApp" {
			_ = unstructured.SetNestedField(o.Object, u.simURL, "spec", "apiURL")
			_ = unstructured.SetNestedField(o.Object, u.svc.url, "spec", "publicURL")
		}
		objs = append(objs, o)
	}
	u.mustKubectl(t, encode(t, objs), "apply", "-n", storyNS, "-f", "-")
	for i := range *upgradeCodes {
		fc := &finchv1.FinchConnection{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pool-%02d", i+1), Namespace: storyNS}}
		fc.Spec.CustomerID = fmt.Sprintf("pool-%02d", i+1)
		fc.Spec.CustomerName = fmt.Sprintf("Pool employer %d", i+1)
		fc.Spec.Products = []finchv1.Product{"company", "directory"}
		if i%2 == 1 {
			fc.Spec.ConnectFlow = finchv1.ConnectFlowEmbedded
		}
		if err := u.c.Create(context.Background(), fc); err != nil {
			fatal(t, err)
		}
	}
	u.await(t, "FinchApp default Ready", func() (bool, string) {
		s := u.field(t, "finchapp", appName, `{.status.conditions[?(@.type=="Ready")].status}`)
		return s == "True", "Ready=" + s
	})
	u.storySessions(t)
	u.acmeConn = u.storyRedirect(t, "acme")
	u.storyEmbedded(t, "globex")
	u.globexConn = u.field(t, "fconn", "globex", "{.status.connectionID}")
	u.storyRedirect(t, "initech")
	if err := u.sim.SetConnectionStatus(u.field(t, "fconn", "initech", "{.status.connectionID}"), "reauth"); err != nil {
		fatal(t, err)
	}
	u.awaitPhase(t, "initech", finchv1.PhaseReauthRequired)
	u.await(t, "initech has a Reauthenticate session", func() (bool, string) {
		k := u.field(t, "fconn", "initech", "{.status.session.kind}")
		return k == string(finchv1.SessionReauthenticate), "kind=" + k
	})
	u.initechSession = u.field(t, "fconn", "initech", "{.status.session.id}")
	u.await(t, "the pool AwaitingConnect", func() (bool, string) {
		u.pool = nil
		for i := range *upgradeCodes {
			fc := u.conn(t, fmt.Sprintf("pool-%02d", i+1))
			if fc.Status.Phase != finchv1.PhaseAwaitingConnect || fc.Status.Session == nil {
				return false, fc.Name + " " + string(fc.Status.Phase)
			}
			u.pool = append(u.pool, poolConn{name: fc.Name, session: fc.Status.Session.ID, connectURL: fc.Status.Session.ConnectURL,
				embedded: fc.Spec.ConnectFlow == finchv1.ConnectFlowEmbedded})
		}
		return true, ""
	})
	u.oldLeader = u.lease(t).holder
	if u.oldLeader == "" {
		fatal(t, "no replica holds the Lease")
	}
	logf("acme, globex Connected; initech ReauthRequired (session %s); %d pool connections AwaitingConnect; Lease held by %s",
		u.initechSession, len(u.pool), u.oldLeader)
}

func (u *upgrade) conn(t *testing.T, name string) *finchv1.FinchConnection {
	t.Helper()
	fc := &finchv1.FinchConnection{}
	if err := u.c.Get(context.Background(), types.NamespacedName{Namespace: storyNS, Name: name}, fc); err != nil {
		fatal(t, err)
	}
	return fc
}

type leaseState struct {
	holder   string
	acquired time.Time
}

func (u *upgrade) lease(t *testing.T) leaseState {
	t.Helper()
	l := &coordinationv1.Lease{}
	if err := u.c.Get(context.Background(), types.NamespacedName{Namespace: helmNS, Name: leaseName}, l); err != nil {
		fatalf(t, "Lease %s/%s: %v", helmNS, leaseName, err)
	}
	s := leaseState{holder: ptrOr(l.Spec.HolderIdentity, "")}
	if l.Spec.AcquireTime != nil {
		s.acquired = l.Spec.AcquireTime.Time
	}
	return s
}

// --- the upgrade under traffic -----------------------------------------------------------------

func (u *upgrade) upgradeUnderTraffic(t *testing.T) {
	defer step(t, "upgrade: helm upgrade to the working tree (replicaCount 2) while codes and webhooks keep coming")()
	stop := make(chan struct{})
	trafficDone := make(chan struct{})
	go u.traffic(stop, trafficDone)
	go u.watchLease(stop)
	start := time.Now()
	u.helm(t, append([]string{"upgrade", helmName, u.chartDir}, u.values(u.to, 2)...)...)
	u.dep = u.deployment(t)
	u.rollout(t, u.dep)
	rolled := time.Since(start)
	var newLeader leaseState
	u.await(t, "a new replica acquires the Lease", func() (bool, string) {
		newLeader = u.lease(t)
		return newLeader.holder != "" && newLeader.holder != u.oldLeader, "holder=" + newLeader.holder
	})
	// Keep the traffic going a little past the handover.
	time.Sleep(3 * tick)
	close(stop)
	<-trafficDone
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.released.IsZero() || u.released.After(newLeader.acquired) {
		u.released = newLeader.acquired // taken over without a release seen in between
	}
	// The old leader leads through --shutdown-delay after SIGTERM, then
	// releases the Lease; the other replicas retry every RetryPeriod (2s).
	u.report = fmt.Sprintf("rollout %.1fs; leader change %.1fs from the old leader's SIGTERM to %s acquiring the Lease (it led on for the shutdown delay; no leader for %.1fs after its release)",
		rolled.Seconds(), newLeader.acquired.Sub(u.leaderSig).Seconds(), newLeader.holder, newLeader.acquired.Sub(u.released).Seconds())
	var codes, hooks int
	for _, h := range u.handed {
		if h.at.After(u.leaderDel) && h.at.Before(newLeader.acquired) {
			codes++
		}
	}
	for _, h := range u.svc.snapshot() {
		if h.route == "webhook" && h.at.After(u.leaderDel) && h.at.Before(newLeader.acquired) {
			hooks++
		}
	}
	if codes == 0 || hooks == 0 {
		errorf(t, "between the old leader's deletion and the new leader, %d codes were handed over and %d webhooks delivered, want some of each (raise -upgrade-codes)", codes, hooks)
	}
	u.report += fmt.Sprintf("; during the leader change %d codes handed over, %d webhooks delivered", codes, hooks)
	logf("%s", u.report)
}

// watchLease notes when the Lease first shows a holder other than the old leader.
func (u *upgrade) watchLease(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
		l := &coordinationv1.Lease{}
		if err := u.c.Get(context.Background(), types.NamespacedName{Namespace: helmNS, Name: leaseName}, l); err != nil {
			continue
		}
		if ptrOr(l.Spec.HolderIdentity, "") != u.oldLeader {
			u.mu.Lock()
			if u.released.IsZero() {
				u.released = time.Now()
			}
			u.mu.Unlock()
			return
		}
	}
}

// traffic hands over one code per five ticks (alternately through the redirect
// callback and a code Secret: 12 exchanges a minute, within the FinchApp's
// default budget of 20 per minute per Finch endpoint, which the operator
// enforces by asking employers to retry) and has Finch deliver a signed account.updated
// webhook every fifth of a tick, so each endpoint the Service routes to sees
// several in any second; once the old leader is being deleted, it flips acme
// to reauth (the new leader must issue exactly one re-authentication session)
// and hands over a code at once.
func (u *upgrade) traffic(stop <-chan struct{}, done chan<- struct{}) {
	var inflight sync.WaitGroup
	defer close(done)
	defer inflight.Wait()
	next := 0
	tk := time.NewTicker(tick / 5)
	defer tk.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-tk.C:
		}
		if n%25 == 0 && next < len(u.pool) {
			pc := u.pool[next]
			next++
			inflight.Go(func() { u.handOver(pc) })
		}
		if err := u.sim.SetConnectionStatus(u.globexConn, "connected"); err != nil {
			logf("webhook for globex: %v", err)
		}
		u.mu.Lock()
		flip := !u.leaderDel.IsZero() && u.reauthAt.IsZero()
		if flip {
			u.reauthAt = time.Now()
		}
		u.mu.Unlock()
		if flip {
			if err := u.sim.SetConnectionStatus(u.acmeConn, "reauth"); err != nil {
				logf("flip acme to reauth: %v", err)
			}
			// And a code right as the leader starts to go.
			if next < len(u.pool) {
				pc := u.pool[next]
				next++
				inflight.Go(func() { u.handOver(pc) })
			}
		}
	}
}

func (u *upgrade) handOver(pc poolConn) {
	h := handover{conn: pc.name, at: time.Now()}
	if pc.embedded {
		h.via = "code Secret"
		code, err := u.sim.CompleteSession(pc.session, finchsim.Completion{})
		if err == nil {
			sec := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: pc.name + "-code", Namespace: storyNS, Labels: map[string]string{finchv1.ConnectionLabel: pc.name}},
				Type:       finchv1.CodeSecretType,
				StringData: map[string]string{finchv1.CodeKey: code},
			}
			err = u.c.Create(context.Background(), sec)
		}
		if err != nil {
			h.err = err.Error()
		}
	} else {
		h.via = "redirect callback"
		jar, _ := cookiejar.New(nil)
		b := &http.Client{Timeout: 60 * time.Second, Jar: jar}
		resp, err := b.Get(pc.connectURL)
		if err != nil {
			h.err = err.Error()
		} else {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			h.status = resp.StatusCode
			if resp.StatusCode != http.StatusOK {
				h.err = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, htmlText(body))
			}
		}
	}
	u.mu.Lock()
	u.handed = append(u.handed, h)
	u.mu.Unlock()
}

// --- after the upgrade ---------------------------------------------------------------------------

func (u *upgrade) check(t *testing.T) {
	defer step(t, "upgrade: nothing lost: codes Connected, no duplicate session, no webhook 5xx")()
	if !u.sim.WaitWebhooks(*timeout) {
		errorf(t, "webhook deliveries still in flight after %s", *timeout)
	}
	u.mu.Lock()
	handed := slices.Clone(u.handed)
	u.mu.Unlock()
	via := map[string]int{}
	for _, h := range handed {
		via[h.via]++
		if h.err != "" {
			errorf(t, "%s: the hand-over through the %s at %s failed: %s", h.conn, h.via, h.at.Format(time.TimeOnly), h.err)
		}
	}
	// What was there before the upgrade is still there.
	if fc := u.conn(t, "globex"); fc.Status.Phase != finchv1.PhaseConnected || fc.Status.ConnectionID != u.globexConn {
		errorf(t, "globex: phase %s connection %s, want Connected %s", fc.Status.Phase, fc.Status.ConnectionID, u.globexConn)
	}
	if fc := u.conn(t, "initech"); fc.Status.Phase != finchv1.PhaseReauthRequired || fc.Status.Session == nil || fc.Status.Session.ID != u.initechSession {
		errorf(t, "initech: phase %s session %+v, want ReauthRequired with session %s", fc.Status.Phase, fc.Status.Session, u.initechSession)
	}
	handedSet := map[string]bool{}
	for _, h := range handed {
		handedSet[h.conn] = true
	}
	for _, pc := range u.pool {
		if handedSet[pc.name] {
			continue
		}
		if fc := u.conn(t, pc.name); fc.Status.Phase != finchv1.PhaseAwaitingConnect || fc.Status.Session == nil || fc.Status.Session.ID != pc.session {
			errorf(t, "%s: phase %s session %+v, want AwaitingConnect with session %s", pc.name, fc.Status.Phase, fc.Status.Session, pc.session)
		}
	}
	u.mu.Lock()
	flipped := !u.reauthAt.IsZero()
	u.mu.Unlock()
	if flipped {
		u.awaitPhase(t, "acme", finchv1.PhaseReauthRequired)
		u.await(t, "acme has a Reauthenticate session", func() (bool, string) {
			fc := u.conn(t, "acme")
			return fc.Status.Session != nil && fc.Status.Session.Kind == finchv1.SessionReauthenticate, "phase=" + string(fc.Status.Phase)
		})
	} else {
		errorf(t, "acme was never flipped to reauth during the rollout")
	}

	// Sessions at Finch: one Connect session per customer, one
	// re-authentication per reauth event, none twice.
	wantReauth := map[string]int{"initech-001": 1}
	if flipped {
		wantReauth["acme-001"] = 1
	}
	count := map[string]map[string]int{}
	for _, s := range u.sim.Sessions() {
		if count[s.CustomerID] == nil {
			count[s.CustomerID] = map[string]int{}
		}
		count[s.CustomerID][s.Kind]++
	}
	dups := 0
	for cust, kinds := range count {
		if n := kinds["connect"]; n > 1 {
			dups += n - 1
			errorf(t, "customer %s: %d Connect sessions at Finch, want 1", cust, n)
		}
		if n := kinds["reauthenticate"]; n != wantReauth[cust] {
			dups += max(n-wantReauth[cust], 0)
			errorf(t, "customer %s: %d re-authentication sessions at Finch, want %d", cust, n, wantReauth[cust])
		}
	}

	// Every answer the Service gave.
	hits := u.svc.snapshot()
	statuses := map[string]map[int]int{}
	for _, h := range hits {
		if statuses[h.route] == nil {
			statuses[h.route] = map[int]int{}
		}
		statuses[h.route][h.status]++
		if h.route != "other" && h.status >= 500 {
			errorf(t, "the Service answered a %s at %s with %d (endpoint %s)", h.route, h.at.Format(time.TimeOnly+".000"), h.status, orDefault(h.backend, "none"))
		}
	}
	for _, h := range handed {
		u.await(t, h.conn+" Connected (code handed over during the rollout)", func() (bool, string) {
			fc := u.conn(t, h.conn)
			return fc.Status.Phase == finchv1.PhaseConnected && fc.Status.ConnectionID != "", "phase=" + string(fc.Status.Phase)
		})
	}
	webhooks := 0
	for _, n := range statuses["webhook"] {
		webhooks += n
	}
	for _, p := range u.pods {
		p.mu.Lock()
		code, err := p.exitCode, p.stopErr
		deleted := p.deleted
		p.mu.Unlock()
		if deleted && (err != nil || code != 0) {
			errorf(t, "%s exited %d (%v) on SIGTERM, want 0 within terminationGracePeriodSeconds", p.name, code, err)
		}
	}
	u.mu.Lock()
	u.report += fmt.Sprintf("; codes handed over during the rollout %d (%d redirect callback, %d code Secret), all Connected; webhooks delivered %d, statuses %s; callbacks %s; duplicate sessions %d; sim webhook deliveries %d of %d attempts",
		len(handed), via["redirect callback"], via["code Secret"], webhooks, fmtStatuses(statuses["webhook"]), fmtStatuses(statuses["callback"]), dups,
		u.sim.WebhookDeliveries(), u.sim.WebhookAttempts())
	u.mu.Unlock()
}

func fmtStatuses(m map[int]int) string {
	var keys []int
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", m[k], k))
	}
	return strings.Join(parts, " ")
}
