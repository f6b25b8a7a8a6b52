// Package finchtest runs the finch-connect-operator and a Finch simulator
// inside a Go test, for teams whose code reads FinchConnections: a service
// that starts a payroll sync when a connection becomes Connected, emails the
// Connect link, or alerts on a reauthentication.
//
// It is to this operator what controller-runtime's envtest is to the API
// server: the caller brings a *rest.Config (usually from envtest), and Start
// installs the operator's CRDs, starts a Finch simulator (package finchsim)
// on a loopback port, runs the operator in-process with the same wiring as
// the released manager, and creates a Ready FinchApp pointing at the
// simulator. An Employer completes Connect sessions as a person would (the
// redirect flow through the operator's callback, or the embedded flow's code
// hand-off), and the Wait functions report what they saw when they time out.
//
//	func TestPayrollSync(t *testing.T) {
//		cfg := startEnvtest(t) // *rest.Config of an envtest API server
//		env := finchtest.Start(t, cfg, finchtest.Options{})
//		conn, _ := env.NewConnection(ctx, "acme", "acme-1")
//		_ = env.Employer.Connect(ctx, conn, finchtest.Connect{})
//		_, err := finchtest.WaitForPhase(ctx, env.Client, conn, finchv1.PhaseConnected, time.Minute)
//		...
//	}
//
// See docs/testing.md for a complete test.
package finchtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/internal/scheme"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// Scheme has the Kubernetes built-in types and the operator's API
// (finch.connectops.dev/v1alpha1); Env.Client uses it.
var Scheme = scheme.Scheme

// Names of the Secrets Start creates next to the FinchApp.
const (
	CredentialsSecretName = "finch-credentials"
	WebhookSecretName     = "finch-webhook"
)

// Options configure Start. The zero value is a working environment.
type Options struct {
	// Namespace holds the FinchApp, its Secrets and the connections the test
	// creates; the operator watches only it, so several environments can
	// share one API server. Default: a new namespace "finchtest-<random>".
	Namespace string
	// AppName is the FinchApp's name. Default "finch".
	AppName string
	// Simulator configures the Finch simulator (clock, per-IP limit, initial
	// sync webhooks, log). Faults and the other behaviours of its /_sim
	// routes are set on Env.Sim after Start.
	Simulator finchsim.Options
	// SimulatorRateLimit is Finch's per-app, per-endpoint limit in the
	// simulator (zero: unlimited).
	SimulatorRateLimit finchsim.RateLimit
	// NoWebhooks stops the simulator from delivering account.updated and
	// initial sync webhooks to the operator (the FinchApp then has no
	// webhook Secret).
	NoWebhooks bool
	// OmitTopLevelStatus, ReauthURLField and SessionURLField reproduce
	// documented oddities of Finch's answers (see finchsim.AppConfig).
	OmitTopLevelStatus bool
	ReauthURLField     string // link field of reauthentication sessions (finchsim.URLField*)
	SessionURLField    string // link field of connect sessions (finchsim.URLField*)
	// App, if set, edits the FinchApp before it is created (spec.rateLimit,
	// spec.introspection...). Start sets apiURL, publicURL and the Secret
	// references first.
	App func(*finchv1.FinchApp)
	// Workers is the number of concurrent FinchConnection reconciles
	// (default: the manager's default).
	Workers int
	// Logger receives the operator's logs (default: discarded). Start also
	// makes it controller-runtime's global logger (ctrl.SetLogger).
	Logger logr.Logger
	// SkipCRDs leaves the CRDs alone (they are already installed).
	SkipCRDs bool
	// ReadyTimeout bounds the wait for the FinchApp to become Ready
	// (default 2 minutes).
	ReadyTimeout time.Duration
}

// Env is one running operator and its Finch simulator.
type Env struct {
	// Client reads and writes the API server directly (no cache), with Scheme.
	Client client.Client
	// Sim is the Finch simulator: inject faults, set rate limits, inspect
	// sessions and connections, count calls.
	Sim *finchsim.Sim
	// SimURL is the simulator's base URL (the FinchApp's spec.apiURL).
	SimURL string
	// InboundURL is the base URL of the operator's callback and webhook
	// server on a loopback port (the FinchApp's spec.publicURL).
	InboundURL string
	// Namespace is where the FinchApp and its Secrets are.
	Namespace string
	// App is the Ready FinchApp (as created; re-read it for its status).
	App *finchv1.FinchApp
	// ClientID, ClientSecret and WebhookSecret are the app's credentials
	// (random per Env), as held by the Secrets and the simulator.
	ClientID, ClientSecret, WebhookSecret string
	// Employer completes Connect sessions and changes connections in Finch.
	Employer *Employer

	stop func()
}

// Start is New for a test: it fails the test if the environment does not
// start and stops it in t.Cleanup.
func Start(t testing.TB, cfg *rest.Config, o Options) *Env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e, err := New(ctx, cfg, o)
	if err != nil {
		cancel()
		t.Fatalf("finchtest: %v", err)
	}
	t.Cleanup(func() {
		e.Stop()
		cancel()
	})
	return e
}

// New installs the CRDs, starts the simulator and the operator, creates the
// namespace, the Secrets and the FinchApp, and waits until the app is Ready.
// Everything stops when ctx ends or Stop is called.
func New(ctx context.Context, cfg *rest.Config, o Options) (*Env, error) {
	if o.AppName == "" {
		o.AppName = "finch"
	}
	if o.Namespace == "" {
		o.Namespace = "finchtest-" + randHex(4)
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 2 * time.Minute
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
	// controller-runtime's parts that log through its global logger (the
	// work queues) complain on stderr when none is set.
	ctrl.SetLogger(o.Logger)
	if !o.SkipCRDs {
		if err := InstallCRDs(cfg); err != nil {
			return nil, err
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	e := &Env{Client: c, Namespace: o.Namespace}
	var cleanups []func()
	e.stop = func() {
		cancel()
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	fail := func(err error) (*Env, error) {
		e.stop()
		return nil, err
	}

	// The inbound server listens first: the simulator's webhooks and the
	// FinchApp's publicURL need its address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(fmt.Errorf("listen for the inbound server: %w", err))
	}
	e.InboundURL = "http://" + l.Addr().String()

	e.ClientID, e.ClientSecret = "client-"+randHex(8), "secret-"+randHex(16)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	e.WebhookSecret = base64.StdEncoding.EncodeToString(key)
	e.Sim = finchsim.New(o.Simulator)
	e.SimURL = e.Sim.Start()
	cleanups = append(cleanups, e.Sim.Close)
	ac := finchsim.AppConfig{
		ClientID: e.ClientID, ClientSecret: e.ClientSecret, RateLimit: o.SimulatorRateLimit,
		OmitTopLevelStatus: o.OmitTopLevelStatus, ReauthURLField: o.ReauthURLField, SessionURLField: o.SessionURLField,
	}
	if !o.NoWebhooks {
		ac.WebhookURL = apps.WebhookURL(e.InboundURL, client.ObjectKey{Namespace: o.Namespace, Name: o.AppName})
		ac.WebhookSecret = e.WebhookSecret
	}
	e.Sim.AddApp(ac)

	// The operator as cmd/manager wires it, scoped to the namespace, with the
	// simulator's loopback address allowed as a Finch API host.
	opts := operator.DefaultOptions()
	opts.Manager.Metrics = metricsserver.Options{BindAddress: "0"}
	opts.Manager.HealthProbeBindAddress = "0"
	opts.Manager.LeaderElection = false
	opts.Manager.Logger = o.Logger
	// Several environments (or a test's own managers) may run in one process.
	opts.Manager.Controller = config.Controller{SkipNameValidation: ptr.To(true)}
	opts.InboundAddr = "0" // served below, on the listener above
	opts.Controllers.WatchNamespaces = []string{o.Namespace}
	opts.Controllers.ClusterResourceNamespace = o.Namespace
	opts.Controllers.FinchAPIHosts = finch.MustParseAPIHosts("127.0.0.1:*")
	if o.Workers > 0 {
		opts.Controllers.MaxConcurrentReconciles = o.Workers
	}
	// Every browser in a test is 127.0.0.1: the per-address limit of
	// unverifiable callbacks would only get in the way.
	opts.Inbound.CallbackIPBurst = 1 << 20
	mgrCtx := ctrl.LoggerInto(ctx, o.Logger)
	mgr, op, err := operator.NewManager(mgrCtx, cfg, opts)
	if err != nil {
		_ = l.Close()
		return fail(fmt.Errorf("operator: %w", err))
	}
	srv := &http.Server{Handler: op.Inbound.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	cleanups = append(cleanups, func() { _ = srv.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(mgrCtx); err != nil {
			o.Logger.Error(err, "finchtest: operator stopped")
		}
	}()
	cleanups = append(cleanups, func() {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	})

	if err := e.createApp(ctx, o); err != nil {
		return fail(err)
	}
	e.Employer = &Employer{Client: c, Sim: e.Sim}
	return e, nil
}

// Stop stops the operator and the simulator. It is safe to call more than
// once. Objects in the API server stay (delete the namespace if needed).
func (e *Env) Stop() {
	if e.stop != nil {
		e.stop()
		e.stop = nil
	}
}

func (e *Env) createApp(ctx context.Context, o Options) error {
	create := func(obj client.Object) error {
		if err := e.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %T %s: %w", obj, obj.GetName(), err)
		}
		return nil
	}
	if err := create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace}}); err != nil {
		return err
	}
	if err := create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: CredentialsSecretName},
		Data:       map[string][]byte{"client_id": []byte(e.ClientID), "client_secret": []byte(e.ClientSecret)},
	}); err != nil {
		return err
	}
	app := &finchv1.FinchApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.AppName},
		Spec: finchv1.FinchAppSpec{
			CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: CredentialsSecretName},
			APIURL:               e.SimURL,
			PublicURL:            e.InboundURL,
		},
	}
	if !o.NoWebhooks {
		if err := create(&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: WebhookSecretName},
			Data:       map[string][]byte{"webhook_secret": []byte(e.WebhookSecret)},
		}); err != nil {
			return err
		}
		app.Spec.WebhookSecretRef = &finchv1.WebhookSecretReference{Name: WebhookSecretName}
	}
	if o.App != nil {
		o.App(app)
	}
	if err := create(app); err != nil {
		return err
	}
	e.App = app
	wctx, cancel := context.WithTimeout(ctx, o.ReadyTimeout)
	defer cancel()
	got := &finchv1.FinchApp{}
	for {
		err := e.Client.Get(wctx, client.ObjectKeyFromObject(app), got)
		if err == nil && meta.IsStatusConditionTrue(got.Status.Conditions, finchv1.ConditionReady) && got.Status.CallbackURL != "" {
			return nil
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("FinchApp %s/%s is not Ready after %s: conditions %s", app.Namespace, app.Name, o.ReadyTimeout, describeConditions(got.Status.Conditions))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NewConnection creates a FinchConnection of the environment's FinchApp in
// its namespace, asking for the company and directory products; edit sets
// anything else (spec.products, spec.connectFlow, spec.customerEmail...).
func (e *Env) NewConnection(ctx context.Context, name, customerID string, edit ...func(*finchv1.FinchConnection)) (*finchv1.FinchConnection, error) {
	conn := &finchv1.FinchConnection{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: name},
		Spec: finchv1.FinchConnectionSpec{
			AppRef:       &finchv1.AppReference{Kind: "FinchApp", Name: e.App.Name},
			CustomerID:   customerID,
			CustomerName: "Customer " + customerID,
			Products:     []finchv1.Product{"company", "directory"},
		},
	}
	for _, f := range edit {
		f(conn)
	}
	if err := e.Client.Create(ctx, conn); err != nil {
		return nil, fmt.Errorf("create FinchConnection %s: %w", name, err)
	}
	return conn, nil
}

// Calls are the Finch API requests the simulator received, by endpoint
// ("POST /connect/sessions", "POST /auth/token", "GET /introspect"...; see
// the finchsim.Endpoint constants), for assertions on how economically the
// operator uses Finch's rate limits. Sim.ResetCounters starts a new count.
func (e *Env) Calls() map[string]int { return e.Sim.CallCounts() }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var errNoConnectionID = errors.New("the FinchConnection has no status.connectionID yet (is it Connected?)")

// StartSimulator starts a Finch simulator alone on a loopback port for a test
// that runs no operator (a client of Finch of its own, say), registers apps,
// and closes it in t.Cleanup. Its base URL is Sim.URL().
func StartSimulator(t testing.TB, o finchsim.Options, apps ...finchsim.AppConfig) *finchsim.Sim {
	t.Helper()
	s := finchsim.New(o)
	s.Start()
	t.Cleanup(s.Close)
	for _, a := range apps {
		s.AddApp(a)
	}
	return s
}
