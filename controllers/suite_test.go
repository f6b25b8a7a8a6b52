package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/controllers"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/pkg/finchsim"
	"github.com/connectops/finch-operator/pkg/finchtest"
)

// The suite runs the real controllers in a real manager against a real API
// server (envtest) and the Finch simulator over HTTP. Each scenario gets its
// own namespace, simulator and FinchApp, so Finch call counts are exact.

var (
	env       *envtest.Environment
	cfg       *rest.Config
	k8sClient client.Client
	ctx       context.Context
	cancel    context.CancelFunc

	mgrCancel context.CancelFunc
	mgrDone   chan struct{}

	// clockOffset shifts the operator's clock (session expiry, introspection due).
	clockOffset atomic.Int64
	// failStatusPatches makes the next N FinchConnection status patches in
	// namespace failStatusPatchesIn fail, as a crash between a Finch call and
	// the status write would. Scoped to one namespace: connections an earlier
	// spec left behind keep reconciling and must not take the failure.
	failStatusPatches   atomic.Int32
	failStatusPatchesIn atomic.Pointer[string]

	// managerGen numbers the managers startManager starts; writeFault, when
	// set, may drop a write of one of them (lostWriteAfter, crashAfter).
	managerGen atomic.Int64
	writeFault atomic.Pointer[func(gen int64, obj client.Object) error]
	// crashedManagers are the managers crashAfter stopped (their shutdown
	// may time out: the crashed reconcile never returns in time).
	crashedManagers sync.Map
)

// simHosts allows the simulators' loopback address, on any port, as the
// operator's Finch API hosts (--finch-api-hosts=127.0.0.1:*); any other host
// (localhost included) is refused.
var simHosts = finch.MustParseAPIHosts("127.0.0.1:*")

// clusterResourceNamespace holds the ClusterFinchApps' Secrets, as the
// operator's own namespace does in a cluster.
const clusterResourceNamespace = "finch-system"

const (
	timeout  = 20 * time.Second
	interval = 50 * time.Millisecond
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(timeout)
	SetDefaultEventuallyPollingInterval(interval)
	SetDefaultConsistentlyDuration(time.Second)
	SetDefaultConsistentlyPollingInterval(100 * time.Millisecond)
	RunSpecs(t, "Controllers suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	env, err = testenv.New()
	Expect(err).NotTo(HaveOccurred())
	cfg, err = testenv.Start(env)
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(cfg, client.Options{Scheme: testenv.Scheme})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: clusterResourceNamespace}})).To(Succeed())
	startManager()
})

// penalizedHosts are servers the operator holds a per-IP penalty for; they
// are closed only when the suite ends, so their ports are not reused.
var penalizedHosts []*httptest.Server

var _ = AfterSuite(func() {
	stopManager()
	for _, srv := range penalizedHosts {
		srv.Close()
	}
	cancel()
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

func now() time.Time { return time.Now().Add(time.Duration(clockOffset.Load())) }

// startManager runs the operator's controllers as production wires them.
func startManager() {
	mctx, mcancel := context.WithCancel(ctx)
	gen := managerGen.Add(1)
	// fault drops a write when writeFault says so.
	fault := func(obj client.Object) error {
		if f := writeFault.Load(); f != nil {
			return (*f)(gen, obj)
		}
		return nil
	}
	mgr, _, err := operator.NewManager(mctx, cfg, operator.Options{Manager: ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// The restart scenario starts a second manager in the same process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		NewClient: func(c *rest.Config, o client.Options) (client.Client, error) {
			inner, err := client.New(c, o)
			if err != nil {
				return nil, err
			}
			return interceptor.NewClient(withWatch{inner}, interceptor.Funcs{
				SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
					if ns := failStatusPatchesIn.Load(); ns != nil && obj.GetNamespace() == *ns && sub == "status" && isConnection(obj) && failStatusPatches.Load() > 0 {
						failStatusPatches.Add(-1)
						return errors.New("injected: status write lost")
					}
					if err := fault(obj); err != nil {
						return err
					}
					countWrite(obj, "status patch")
					return c.SubResource(sub).Patch(ctx, obj, p, opts...)
				},
				SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
					if err := fault(obj); err != nil {
						return err
					}
					countWrite(obj, "status update")
					return c.SubResource(sub).Update(ctx, obj, opts...)
				},
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					if err := fault(obj); err != nil {
						return err
					}
					countWrite(obj, "create")
					return c.Create(ctx, obj, opts...)
				},
				Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
					if err := fault(obj); err != nil {
						return err
					}
					countWrite(obj, "update")
					return c.Update(ctx, obj, opts...)
				},
				Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
					if err := fault(obj); err != nil {
						return err
					}
					countWrite(obj, "patch")
					return c.Patch(ctx, obj, p, opts...)
				},
				Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
					if err := fault(obj); err != nil {
						return err
					}
					countWrite(obj, "delete")
					return c.Delete(ctx, obj, opts...)
				},
			}), nil
		},
	}, Controllers: controllers.Options{Now: now, RetryBase: 100 * time.Millisecond, ClusterResourceNamespace: clusterResourceNamespace,
		// Every scenario's simulator listens on an ephemeral loopback port.
		FinchAPIHosts: simHosts}})
	Expect(err).NotTo(HaveOccurred())
	mgrCancel = mcancel
	done := make(chan struct{})
	mgrDone = done
	go func() {
		defer GinkgoRecover()
		defer close(done)
		err := mgr.Start(mctx)
		if _, crashed := crashedManagers.Load(gen); !crashed {
			Expect(err).To(Succeed())
		}
	}()
}

func stopManager() {
	mgrCancel()
	Eventually(mgrDone).Should(BeClosed())
}

// lostWriteAfter drops the first write of a FinchConnection in the scenario
// made after the simulator has received one more call to endpoint: the
// status write (or finalizer removal) after that call is lost, as on an API
// server timeout or conflict. The manager goes on.
func (s *scenario) lostWriteAfter(endpoint string) {
	before := s.sim.Calls(endpoint)
	var fired atomic.Bool
	f := func(_ int64, obj client.Object) error {
		if _, ok := obj.(*finchv1.FinchConnection); !ok || obj.GetNamespace() != s.ns || s.sim.Calls(endpoint) <= before || !fired.CompareAndSwap(false, true) {
			return nil
		}
		return errors.New("injected: the write after " + endpoint + " was lost")
	}
	writeFault.Store(&f)
	DeferCleanup(func() { writeFault.Store(nil) })
}

// crashAfter stops the manager right after its next call to endpoint: at the
// first write of a FinchConnection in the scenario after that call (its
// status write, or the finalizer removal), the manager is cancelled, that
// reconcile never returns (until the scenario ends) and every other write of
// the manager is dropped, as if the process had died between the Finch call
// and the write. restartAfterCrash starts a new manager meanwhile.
func (s *scenario) crashAfter(endpoint string) {
	before := s.sim.Calls(endpoint)
	victim, cancel := managerGen.Load(), mgrCancel
	var dead atomic.Bool
	crashed, release := make(chan struct{}), make(chan struct{})
	f := func(gen int64, obj client.Object) error {
		if gen != victim {
			return nil
		}
		if dead.Load() {
			return errors.New("injected: the manager has crashed")
		}
		if _, ok := obj.(*finchv1.FinchConnection); !ok || obj.GetNamespace() != s.ns || s.sim.Calls(endpoint) <= before {
			return nil
		}
		dead.Store(true)
		crashedManagers.Store(victim, true)
		cancel()
		close(crashed)
		<-release // a dead process makes no further call
		return errors.New("injected: the manager crashed after " + endpoint)
	}
	writeFault.Store(&f)
	crashChan = crashed
	DeferCleanup(func() {
		close(release)
		writeFault.Store(nil)
		if dead.Load() && managerGen.Load() == victim {
			startManager() // a failed scenario must not leave the suite without a manager
		}
	})
}

// crashChan is closed when the manager crashAfter armed has crashed.
var crashChan <-chan struct{}

// restartAfterCrash waits for the crash and starts a new manager, with
// nothing in memory: only what reached the API server and Finch.
func restartAfterCrash() {
	EventuallyWithOffset(1, crashChan).Should(BeClosed(), "the manager did not crash")
	startManager()
}

// scenario is one isolated world: a namespace, a simulator and a FinchApp.
type scenario struct {
	ns  string
	sim *finchsim.Sim
	app *finchv1.FinchApp
}

const (
	clientID     = "client-id"
	clientSecret = "client-secret"
)

func newScenario() *scenario {
	sim := finchsim.New(finchsim.Options{})
	url := sim.Start()
	DeferCleanup(sim.Close)
	sim.AddApp(finchsim.AppConfig{ClientID: clientID, ClientSecret: clientSecret})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "fc-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	s := &scenario{ns: ns.Name, sim: sim}
	s.createSecret("finch-credentials", map[string]string{"client_id": clientID, "client_secret": clientSecret})
	s.app = &finchv1.FinchApp{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: s.ns},
		Spec: finchv1.FinchAppSpec{
			APIURL:               url,
			CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "finch-credentials"},
			RedirectURI:          "https://operator.example.com/callback",
		},
	}
	Expect(k8sClient.Create(ctx, s.app)).To(Succeed())
	return s
}

// setAppBudget sets the scenario app's spec.rateLimit and the simulator's
// limit to requests per window, and waits until the operator has seen it:
// connections created before would rightly spend the old budget.
func (s *scenario) setAppBudget(requests int, window time.Duration) {
	Eventually(func() error {
		app := &finchv1.FinchApp{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s.app), app)).To(Succeed())
		app.Spec.RateLimit = &finchv1.RateLimit{Requests: int32(requests), Window: &metav1.Duration{Duration: window}}
		return k8sClient.Update(ctx, app)
	}).Should(Succeed())
	Eventually(func(g Gomega) {
		app := &finchv1.FinchApp{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s.app), app)).To(Succeed())
		g.Expect(app.Spec.RateLimit).NotTo(BeNil())
		g.Expect(app.Status.ObservedGeneration).To(Equal(app.Generation))
	}).Should(Succeed())
	s.sim.SetRateLimit(clientID, finchsim.RateLimit{Requests: requests, Window: window})
}

func (s *scenario) createSecret(name string, data map[string]string) *corev1.Secret {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns}, StringData: data}
	Expect(k8sClient.Create(ctx, sec)).To(Succeed())
	return sec
}

func (s *scenario) newConn(name, customer string, mutate ...func(*finchv1.FinchConnection)) *finchv1.FinchConnection {
	c := &finchv1.FinchConnection{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns},
		Spec: finchv1.FinchConnectionSpec{
			CustomerID: customer, CustomerName: "Customer " + customer,
			Products: []finchv1.Product{"company", "directory"},
		},
	}
	for _, m := range mutate {
		m(c)
	}
	Expect(k8sClient.Create(ctx, c)).To(Succeed())
	return c
}

func (s *scenario) get(name string) *finchv1.FinchConnection {
	c := &finchv1.FinchConnection{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, c)).To(Succeed())
	return c
}

// waitPhase waits for a phase whose result is final for the current generation.
func (s *scenario) waitPhase(name string, phase finchv1.Phase) *finchv1.FinchConnection {
	var c *finchv1.FinchConnection
	EventuallyWithOffset(1, func(g Gomega) {
		c = &finchv1.FinchConnection{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, c)).To(Succeed())
		g.Expect(c.Status.Phase).To(Equal(phase), "conditions: %v", c.Status.Conditions)
		g.Expect(c.Status.ObservedGeneration).To(Equal(c.Generation))
	}).Should(Succeed())
	return c
}

// waitCondition waits for a condition with the given status and reason.
func (s *scenario) waitCondition(name, typ string, status metav1.ConditionStatus, reason string) *finchv1.FinchConnection {
	var c *finchv1.FinchConnection
	EventuallyWithOffset(1, func(g Gomega) {
		c = &finchv1.FinchConnection{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, c)).To(Succeed())
		cond := meta.FindStatusCondition(c.Status.Conditions, typ)
		g.Expect(cond).NotTo(BeNil(), "conditions: %v", c.Status.Conditions)
		g.Expect(cond.Status).To(Equal(status), "condition %s: %s", typ, cond.Message)
		g.Expect(cond.Reason).To(Equal(reason), "condition %s: %s", typ, cond.Message)
	}).Should(Succeed())
	return c
}

// handOverCode completes the session as the employer and hands the code to
// the operator the embedded-flow way (a labelled code Secret).
func (s *scenario) handOverCode(name, sessionID string) string {
	code, err := s.sim.CompleteSession(sessionID, finchsim.Completion{})
	Expect(err).NotTo(HaveOccurred())
	s.createCodeSecret(name, code)
	return code
}

// createCodeSecret hands a code over with the public test kit's employer
// (pkg/finchtest), so the kit's embedded flow is what this suite exercises.
func (s *scenario) createCodeSecret(name, code string) {
	em := &finchtest.Employer{Client: k8sClient, Sim: s.sim}
	conn := &finchv1.FinchConnection{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: name}}
	Expect(em.HandOverCode(ctx, conn, code)).To(Succeed())
}

// connect takes a new FinchConnection all the way to Connected.
func (s *scenario) connect(name, customer string, mutate ...func(*finchv1.FinchConnection)) *finchv1.FinchConnection {
	s.newConn(name, customer, mutate...)
	c := s.waitPhase(name, finchv1.PhaseAwaitingConnect)
	s.handOverCode(name, c.Status.Session.ID)
	return s.waitPhase(name, finchv1.PhaseConnected)
}

func (s *scenario) tokenSecret(name string) *corev1.Secret {
	sec := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name + "-finch-token"}, sec)).To(Succeed())
	return sec
}

func (s *scenario) annotate(name, key, value string) {
	c := s.get(name)
	patch := client.MergeFrom(c.DeepCopy())
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[key] = value
	Expect(k8sClient.Patch(ctx, c, patch)).To(Succeed())
}

func (s *scenario) update(name string, mutate func(*finchv1.FinchConnection)) {
	Eventually(func() error {
		c := s.get(name)
		mutate(c)
		return k8sClient.Update(ctx, c)
	}).Should(Succeed())
}

func (s *scenario) calls(endpoint string) int { return s.sim.Calls(endpoint) }

// quiet asserts that no Finch call happens for a while.
func (s *scenario) quiet() {
	before := s.sim.CallCounts()
	ConsistentlyWithOffset(1, s.sim.CallCounts).Should(Equal(before))
}

func (s *scenario) events(name string) []string {
	list := &corev1.EventList{}
	Expect(k8sClient.List(ctx, list, client.InNamespace(s.ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

func (s *scenario) deleteAndWait(name string) {
	Expect(k8sClient.Delete(ctx, s.get(name))).To(Succeed())
	Eventually(func() bool {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, &finchv1.FinchConnection{})
		return apierrors.IsNotFound(err)
	}).Should(BeTrue())
}

const (
	epSessions   = "POST /connect/sessions"
	epReauth     = "POST /connect/sessions/reauthenticate"
	epToken      = "POST /auth/token"
	epIntrospect = "GET /introspect"
	epDisconnect = "POST /disconnect"
)

// writes counts the operator's API writes per namespace and kind of write
// (Events go through their own client and are not counted here).
var (
	writesMu sync.Mutex
	writes   = map[string]map[string]int{}
)

func countWrite(obj client.Object, what string) {
	kind := fmt.Sprintf("%T", obj)
	writesMu.Lock()
	defer writesMu.Unlock()
	keys := []string{obj.GetNamespace()}
	if _, ok := obj.(*corev1.ConfigMap); ok {
		keys = append(keys, configMapWrites(obj.GetNamespace(), obj.GetName()))
	}
	for _, k := range keys {
		if writes[k] == nil {
			writes[k] = map[string]int{}
		}
		writes[k][what+" "+kind[strings.LastIndex(kind, ".")+1:]]++
	}
}

// configMapWrites is the writesIn key of the writes to one ConfigMap (a
// Finch application's budget claims live in the cluster resource namespace,
// where every scenario's apps write theirs).
func configMapWrites(ns, name string) string { return "ConfigMap " + ns + "/" + name }

func writesIn(ns string) map[string]int {
	writesMu.Lock()
	defer writesMu.Unlock()
	out := map[string]int{}
	for k, v := range writes[ns] {
		out[k] = v
	}
	return out
}

// withWatch lets the interceptor wrap the manager's client, which has no Watch.
type withWatch struct{ client.Client }

func (withWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("watch is not used")
}

func isConnection(obj client.Object) bool {
	_, ok := obj.(*finchv1.FinchConnection)
	return ok
}

// failNextStatusPatches makes the next n status writes of the scenario's
// FinchConnections fail (see failStatusPatches).
func (s *scenario) failNextStatusPatches(n int32) {
	failStatusPatchesIn.Store(&s.ns)
	failStatusPatches.Store(n)
	DeferCleanup(func() { failStatusPatches.Store(0); failStatusPatchesIn.Store(nil) })
}
