package inbound_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/internal/index"
	"github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/pkg/finchsim"
	"github.com/connectops/finch-operator/pkg/finchtest"
)

// sharedEnv is one API server (envtest) with the operator as cmd/manager
// wires it (operator.NewManager) and its inbound server (op.Inbound) under
// test on a real HTTP listener. It starts lazily, once per test process, so
// tests that need no API server (and fuzz workers) stay cheap until they ask
// for it.
type sharedEnv struct {
	env    *envtest.Environment // nil in a fuzz worker
	cfg    *rest.Config
	mgr    manager.Manager
	op     *operator.Operator
	k8s    client.Client // direct (uncached) client for the tests' own reads and writes
	cached client.Client // the manager's cached client (what the server uses)
	ts     *httptest.Server
	cancel context.CancelFunc
	done   chan struct{}
}

var (
	envOnce sync.Once
	envErr  error
	shared  *sharedEnv
)

// clusterResourceNamespace holds the Secrets of the tests' ClusterFinchApps.
const clusterResourceNamespace = "finch-system"

// fuzzKubeconfigEnv carries the coordinator's API server to fuzz workers.
const fuzzKubeconfigEnv = "INBOUND_FUZZ_KUBECONFIG"

// unlimited are the inbound limits of the server under test: every test's
// browser is 127.0.0.1, so the per-address and per-app limits are tested on a
// server of their own (ratelimit_test.go).
func unlimited() inbound.Config {
	return inbound.Config{
		CallbackIPBurst: 1 << 20, CallbackAppBurst: 1 << 20,
		CallbackExchanges: budget.Config{Requests: 1 << 20, Window: time.Minute},
	}
}

// TestMain stops the API server at the end. When fuzzing (go test -fuzz), the
// coordinator process starts the API server up front and its workers connect
// to it instead of starting their own: the fuzzing engine gives a worker one
// second to exit and then kills it, which would orphan an envtest etcd and
// kube-apiserver (and hang the coordinator on their inherited pipes).
func TestMain(m *testing.M) {
	flag.Parse()
	fuzzing := flagValue("test.fuzz") != ""
	worker := flagValue("test.fuzzworker") == "true"
	var kubeconfigDir string
	if fuzzing && !worker {
		envOnce.Do(func() { shared, envErr = startEnv() })
		if envErr != nil {
			fmt.Fprintln(os.Stderr, "start envtest:", envErr)
			os.Exit(1)
		}
		var err error
		kubeconfigDir, err = os.MkdirTemp("", "inbound-fuzz-")
		if err == nil {
			path := filepath.Join(kubeconfigDir, "kubeconfig")
			if err = writeKubeconfig(shared.cfg, path); err == nil {
				err = os.Setenv(fuzzKubeconfigEnv, path)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "kubeconfig for fuzz workers:", err)
			shared.stop()
			os.Exit(1)
		}
	}
	code := m.Run()
	if shared != nil {
		shared.stop()
	}
	if kubeconfigDir != "" {
		_ = os.RemoveAll(kubeconfigDir)
	}
	os.Exit(code)
}

func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

func getEnv(tb testing.TB) *sharedEnv {
	tb.Helper()
	envOnce.Do(func() {
		if path := os.Getenv(fuzzKubeconfigEnv); path != "" && flagValue("test.fuzzworker") == "true" {
			shared, envErr = startWorkerEnv(path)
			return
		}
		shared, envErr = startEnv()
	})
	if envErr != nil {
		tb.Fatalf("start envtest: %v", envErr)
	}
	return shared
}

func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	kc.CurrentContext = "envtest"
	return clientcmd.WriteToFile(*kc, path)
}

// startWorkerEnv serves the inbound handlers of a fuzz worker from the
// coordinator's API server: a manager with the cache and field indexes, no
// controllers (the coordinator runs those) and no child processes.
func startWorkerEnv(kubeconfig string) (*sharedEnv, error) {
	ctrl.SetLogger(logr.Discard())
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 200, 400
	e := &sharedEnv{cfg: cfg, done: make(chan struct{})}
	if e.mgr, err = ctrl.NewManager(cfg, ctrl.Options{
		Scheme: testenv.Scheme, Cache: operator.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	if err := index.Setup(ctx, e.mgr, true); err != nil {
		cancel()
		return nil, err
	}
	if e.k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme}); err != nil {
		cancel()
		return nil, err
	}
	in := unlimited()
	in.Client, in.APIReader = e.mgr.GetClient(), e.mgr.GetAPIReader()
	in.Apps = &apps.Registry{Reader: e.mgr.GetAPIReader(), Writer: e.k8s, ClusterResourceNamespace: clusterResourceNamespace, APIHosts: simHosts}
	in.Recorder = e.mgr.GetEventRecorder(operator.EventSource)
	e.op = &operator.Operator{Apps: in.Apps, Inbound: inbound.New(in)}
	return e.serve(ctx)
}

// simHosts allows the tests' simulators, on ephemeral loopback ports, as
// Finch API hosts (--finch-api-hosts=127.0.0.1:*).
var simHosts = finch.MustParseAPIHosts("127.0.0.1:*")

func startEnv() (*sharedEnv, error) {
	logSink := io.Discard
	if os.Getenv("INBOUND_TEST_LOG") != "" {
		logSink = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(logSink)))

	env, err := testenv.New()
	if err != nil {
		return nil, err
	}
	cfg, err := testenv.Start(env)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 200, 400
	e := &sharedEnv{env: env, cfg: cfg, done: make(chan struct{})}
	fail := func(err error) (*sharedEnv, error) {
		_ = env.Stop()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	// The operator as cmd/manager runs it; nothing listens (the test serves
	// op.Inbound itself), and the unlimited inbound limits above.
	o := operator.Options{
		Manager: ctrl.Options{
			Metrics:                metricsserver.Options{BindAddress: "0"},
			HealthProbeBindAddress: "0",
		},
		Inbound:   unlimited(),
		KubeQPS:   float64(cfg.QPS),
		KubeBurst: cfg.Burst,
	}
	o.Controllers.ClusterResourceNamespace, o.Controllers.FinchAPIHosts = clusterResourceNamespace, simHosts
	e.mgr, e.op, err = operator.NewManager(ctx, cfg, o)
	if err != nil {
		cancel()
		return fail(err)
	}
	e.k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		cancel()
		return fail(err)
	}
	if err := e.k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: clusterResourceNamespace}}); err != nil {
		cancel()
		return fail(err)
	}
	return e.serve(ctx)
}

// serve starts the manager and serves the inbound server under test.
func (e *sharedEnv) serve(ctx context.Context) (*sharedEnv, error) {
	e.cached = e.mgr.GetClient()
	e.ts = httptest.NewServer(e.op.Inbound.Handler())
	go func() {
		defer close(e.done)
		if err := e.mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	syncCtx, syncCancel := context.WithTimeout(ctx, time.Minute)
	defer syncCancel()
	if !e.mgr.GetCache().WaitForCacheSync(syncCtx) {
		e.stop()
		return nil, fmt.Errorf("cache did not sync")
	}
	return e, nil
}

func (e *sharedEnv) stop() {
	e.ts.Close()
	e.cancel()
	select {
	case <-e.done:
	case <-time.After(30 * time.Second):
	}
	if e.env != nil {
		_ = e.env.Stop()
	}
}

// fixture is one test's namespace, Finch simulator and FinchApp.
type fixture struct {
	t             *testing.T
	g             *WithT
	e             *sharedEnv
	ctx           context.Context
	ns            string
	app           string
	sim           *finchsim.Sim
	simURL        string
	clientID      string
	clientSecret  string
	webhookSecret string
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	e := getEnv(t)
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(60 * time.Second)
	g.SetDefaultEventuallyPollingInterval(25 * time.Millisecond)
	g.SetDefaultConsistentlyDuration(time.Second)
	g.SetDefaultConsistentlyPollingInterval(50 * time.Millisecond)
	f := &fixture{
		t: t, g: g, e: e, ctx: context.Background(),
		ns: "t-" + randHex(5), app: "default",
		clientID: "client-" + randHex(6), clientSecret: "secret-" + randHex(12),
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	f.webhookSecret = base64.StdEncoding.EncodeToString(key)
	f.sim = finchsim.New(finchsim.Options{Logf: t.Logf})
	f.simURL = f.sim.Start()
	t.Cleanup(f.sim.Close)
	f.sim.AddApp(finchsim.AppConfig{
		ClientID: f.clientID, ClientSecret: f.clientSecret,
		WebhookURL: f.webhookURL(f.app), WebhookSecret: f.webhookSecret,
	})
	f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}})
	f.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "finch-credentials"},
		Data:       map[string][]byte{"client_id": []byte(f.clientID), "client_secret": []byte(f.clientSecret)},
	})
	f.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "finch-webhook"},
		Data:       map[string][]byte{"webhook_secret": []byte(f.webhookSecret)},
	})
	f.createApp(f.app, func(a *finchv1.FinchApp) {
		a.Spec.WebhookSecretRef = &finchv1.WebhookSecretReference{Name: "finch-webhook"}
	})
	return f
}

// createApp creates a FinchApp using the fixture's simulator and credentials
// and waits until it is Ready.
func (f *fixture) createApp(name string, mutate func(*finchv1.FinchApp)) *finchv1.FinchApp {
	f.t.Helper()
	app := &finchv1.FinchApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec: finchv1.FinchAppSpec{
			CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "finch-credentials"},
			APIURL:               f.simURL,
			PublicURL:            f.e.ts.URL,
			// The budget is not under test here: keep it out of the way.
			RateLimit: &finchv1.RateLimit{Requests: 100000, Window: &metav1.Duration{Duration: time.Minute}},
		},
	}
	if mutate != nil {
		mutate(app)
	}
	f.create(app)
	f.g.Eventually(func(g Gomega) {
		got := &finchv1.FinchApp{}
		g.Expect(f.e.k8s.Get(f.ctx, client.ObjectKeyFromObject(app), got)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, finchv1.ConditionReady)).To(BeTrue(), "FinchApp Ready")
		// The server reads through the cache: wait until it sees the app too.
		g.Expect(f.e.cached.Get(f.ctx, client.ObjectKeyFromObject(app), &finchv1.FinchApp{})).To(Succeed())
	}).Should(Succeed())
	return app
}

func (f *fixture) create(obj client.Object) {
	f.t.Helper()
	f.g.Expect(f.e.k8s.Create(f.ctx, obj)).To(Succeed())
}

// callbackURL is the app's published callback URL (with its secret path segment).
func (f *fixture) callbackURL(app string) string {
	f.t.Helper()
	var u string
	f.g.Eventually(func(g Gomega) {
		got := &finchv1.FinchApp{}
		g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: app}, got)).To(Succeed())
		u = got.Status.CallbackURL
		g.Expect(u).NotTo(BeEmpty(), "status.callbackURL")
	}).Should(Succeed())
	return u
}

// stateOf is the signed state a published Connect URL carries.
func stateOf(connectURL string) string {
	u, err := url.Parse(connectURL)
	if err != nil {
		return ""
	}
	return u.Query().Get("state")
}

func (f *fixture) webhookURL(app string) string {
	return apps.WebhookURL(f.e.ts.URL, types.NamespacedName{Namespace: f.ns, Name: app})
}

// newConnection creates a FinchConnection of the fixture's default app.
func (f *fixture) newConnection(name, customerID string, mutate func(*finchv1.FinchConnection)) *finchv1.FinchConnection {
	f.t.Helper()
	conn := &finchv1.FinchConnection{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec: finchv1.FinchConnectionSpec{
			CustomerID: customerID, CustomerName: "Customer " + customerID,
			Products: []finchv1.Product{"company", "directory"},
		},
	}
	if mutate != nil {
		mutate(conn)
	}
	f.create(conn)
	return conn
}

func (f *fixture) getConn(name string) *finchv1.FinchConnection {
	f.t.Helper()
	conn := &finchv1.FinchConnection{}
	f.g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: name}, conn)).To(Succeed())
	return conn
}

// waitSession waits until the controller publishes a session of the given kind.
func (f *fixture) waitSession(name string, kind finchv1.SessionKind) *finchv1.FinchConnection {
	f.t.Helper()
	// The public test kit's wait (pkg/finchtest), which says what it saw on a timeout.
	conn, err := finchtest.WaitForSession(f.ctx, f.e.k8s,
		&finchv1.FinchConnection{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name}}, kind, 60*time.Second)
	f.g.Expect(err).NotTo(HaveOccurred())
	return conn
}

// waitConnected waits for phase Connected with a token Secret; it returns the
// connection and its token.
func (f *fixture) waitConnected(name string) (*finchv1.FinchConnection, string) {
	f.t.Helper()
	var conn *finchv1.FinchConnection
	var token string
	f.g.Eventually(func(g Gomega) {
		conn = &finchv1.FinchConnection{}
		g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: name}, conn)).To(Succeed())
		g.Expect(conn.Status.Phase).To(Equal(finchv1.PhaseConnected))
		g.Expect(conn.Status.Session).To(BeNil())
		sec := &corev1.Secret{}
		g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: conn.TokenSecretName()}, sec)).To(Succeed())
		token = string(sec.Data[finchv1.AccessTokenKey])
		g.Expect(token).NotTo(BeEmpty())
		g.Expect(conn.Status.TokenVersion).To(Equal(sec.ResourceVersion), "the current token was introspected")
	}).Should(Succeed())
	return conn, token
}

// browser is the employer's browser: it follows redirects (Finch Connect's
// 302 to the callback) like a real one.
var browser = &http.Client{Timeout: 90 * time.Second}

type httpResult struct {
	status   int
	body     string
	header   http.Header
	finalURL string
}

func get(t *testing.T, c *http.Client, url string) httpResult {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpResult{status: resp.StatusCode, body: string(b), header: resp.Header, finalURL: resp.Request.URL.String()}
}

// connectViaRedirect has the employer complete the published session through
// the real redirect flow and waits until the connection is Connected.
func (f *fixture) connectViaRedirect(name, customerID string) (*finchv1.FinchConnection, string) {
	f.t.Helper()
	f.newConnection(name, customerID, nil)
	conn := f.waitSession(name, finchv1.SessionConnect)
	p := get(f.t, browser, conn.Status.Session.ConnectURL)
	f.g.Expect(p.status).To(Equal(http.StatusOK), p.body)
	f.g.Expect(p.body).To(Equal(inbound.PageConnected))
	return f.waitConnected(name)
}

// signedWebhook builds a webhook request as Finch sends it.
func (f *fixture) signedWebhook(app string, body []byte, eventID string, ts time.Time, secret string) *http.Request {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.webhookURL(app), strings.NewReader(string(body)))
	f.g.Expect(err).NotTo(HaveOccurred())
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(finch.HeaderEventID, eventID)
	req.Header.Set(finch.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	sig, err := finch.Sign(body, eventID, ts, secret)
	f.g.Expect(err).NotTo(HaveOccurred())
	req.Header.Set(finch.HeaderSignature, sig)
	return req
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func accountUpdated(connectionID, status string) []byte {
	return []byte(fmt.Sprintf(`{"account_id":"acc","company_id":"comp","connection_id":%q,"event_type":"account.updated","data":{"status":%q,"authentication_method":{"type":"credential"}}}`,
		connectionID, status))
}

// events lists the Events recorded on an object with a reason.
func (f *fixture) events(g Gomega, kind, name, reason string) []eventsv1.Event {
	list := &eventsv1.EventList{}
	g.Expect(f.e.k8s.List(f.ctx, list, client.InNamespace(f.ns))).To(Succeed())
	var out []eventsv1.Event
	for _, ev := range list.Items {
		if ev.Regarding.Kind == kind && ev.Regarding.Name == name && ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}

// counter reads a counter of a CounterVec.
// counter sums the series of vec whose result, reason or kind label is label,
// over every namespace and app.
func counter(vec *prometheus.CounterVec, label string) float64 {
	return counterWhere(vec, label, nil)
}

// counterFor is counter for the series of one namespace and app (label values).
func counterFor(vec *prometheus.CounterVec, namespace, app, label string) float64 {
	return counterWhere(vec, label, map[string]string{"namespace": namespace, "app": app})
}

func counterWhere(vec *prometheus.CounterVec, label string, want map[string]string) float64 {
	ch := make(chan prometheus.Metric, 1024)
	go func() { vec.Collect(ch); close(ch) }()
	sum := 0.0
	for pm := range ch {
		m := &dto.Metric{}
		if err := pm.Write(m); err != nil {
			return -1
		}
		ok := true
		for _, lp := range m.GetLabel() {
			switch v, scoped := want[lp.GetName()]; {
			case lp.GetName() == "namespace" || lp.GetName() == "app":
				ok = ok && (!scoped || v == lp.GetValue())
			default:
				ok = ok && lp.GetValue() == label
			}
		}
		if ok {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// quiet waits until the simulator's call counts stop changing (the
// controller has nothing left to do) and returns them.
func (f *fixture) quiet() map[string]int {
	f.t.Helper()
	var last map[string]int
	stableSince := time.Now()
	f.g.Eventually(func() bool {
		cur := f.sim.CallCounts()
		if !equalCounts(cur, last) {
			last, stableSince = cur, time.Now()
			return false
		}
		return time.Since(stableSince) >= 500*time.Millisecond
	}).Should(BeTrue())
	return last
}

func equalCounts(a, b map[string]int) bool {
	if a == nil || b == nil || len(a) != len(b) {
		return a == nil && b == nil
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
