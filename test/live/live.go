// Package live runs the whole operator in-process for tests that act on it
// from the outside, as a user or Prometheus would: a real API server
// (envtest), the manager exactly as cmd/manager wires it
// (operator.NewManager) with its metrics endpoint on a loopback port, and
// per-test worlds of a namespace, a Finch simulator and a FinchApp.
// The kubectl plugin's tests and the monitoring tests use it.
package live

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// Env is a running API server with the operator.
type Env struct {
	Config *rest.Config
	// Client is a direct (uncached) client for the test's own reads and writes.
	Client client.Client
	// Kubeconfig is the path of a kubeconfig for the API server (for CLIs).
	Kubeconfig string
	// MetricsURL is the manager's Prometheus endpoint (http://127.0.0.1:port/metrics).
	MetricsURL string

	env    *envtest.Environment
	dir    string
	cancel context.CancelFunc
	done   chan error
}

// Start starts the API server and the manager. Stop releases both.
func Start() (*Env, error) { return StartWith(nil) }

// StartWith is Start with the manager's options changed by mutate (after
// cmd/manager's defaults and the test's listeners are set).
func StartWith(mutate func(*operator.Options)) (*Env, error) {
	return StartOptions(Options{Manager: mutate})
}

// Options configure StartOptions.
type Options struct {
	// Manager changes the manager's options, as StartWith's mutate does.
	Manager func(*operator.Options)
	// Setup runs after the API server has started and before the manager
	// does, with Env.Client, Env.Config and Env.Kubeconfig set (the admin's),
	// for example to install RBAC the manager needs from its first request.
	Setup func(ctx context.Context, e *Env) error
	// ManagerConfig returns the rest.Config the manager runs with, given a
	// copy of the admin's Env.Config (for example ImpersonateServiceAccount
	// and a ForbiddenLog); nil: the admin's. Env.Config and Env.Client stay
	// the admin's.
	ManagerConfig func(*rest.Config) *rest.Config
}

// StartOptions is StartWith with a Setup step before the manager starts and
// the manager's own rest.Config.
func StartOptions(o Options) (*Env, error) {
	env, err := testenv.New()
	if err != nil {
		return nil, err
	}
	cfg, err := testenv.Start(env)
	if err != nil {
		return nil, fmt.Errorf("start envtest: %w", err)
	}
	e := &Env{Config: cfg, env: env}
	if err := e.start(o); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

func (e *Env) start(opts Options) error {
	mutate := opts.Manager
	var err error
	if e.Client, err = client.New(e.Config, client.Options{Scheme: testenv.Scheme}); err != nil {
		return err
	}
	if e.dir, err = os.MkdirTemp("", "finch-live-"); err != nil {
		return err
	}
	e.Kubeconfig = filepath.Join(e.dir, "kubeconfig")
	if err := writeKubeconfig(e.Config, e.Kubeconfig); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	e.MetricsURL = "http://" + addr + "/metrics"

	// cmd/manager's defaults, with loopback or no listeners.
	o := operator.DefaultOptions()
	o.Manager.Metrics.BindAddress = addr
	o.Manager.HealthProbeBindAddress = "0"
	o.InboundAddr = "0"
	o.Controllers.RetryBase = 200 * time.Millisecond
	// The tests' simulators listen on ephemeral loopback ports.
	o.Controllers.FinchAPIHosts = finch.MustParseAPIHosts("127.0.0.1:*")
	if mutate != nil {
		mutate(&o)
	}
	if opts.Setup != nil {
		if err := opts.Setup(context.Background(), e); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	mgrConfig := e.Config
	if opts.ManagerConfig != nil {
		mgrConfig = opts.ManagerConfig(rest.CopyConfig(e.Config))
	}
	ctx, cancel := context.WithCancel(context.Background())
	mgr, _, err := operator.NewManager(ctx, mgrConfig, o)
	if err != nil {
		cancel()
		return fmt.Errorf("new manager: %w", err)
	}
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- mgr.Start(ctx) }()
	return nil
}

// Stop stops the manager and the API server.
func (e *Env) Stop() error {
	var errs []error
	if e.cancel != nil {
		e.cancel()
		select {
		case err := <-e.done:
			errs = append(errs, err)
		case <-time.After(time.Minute):
			errs = append(errs, errors.New("the manager did not stop within a minute"))
		}
	}
	if e.env != nil {
		errs = append(errs, e.env.Stop())
	}
	if e.dir != "" {
		errs = append(errs, os.RemoveAll(e.dir))
	}
	return errors.Join(errs...)
}

// Credentials of every World's simulated Finch application.
const (
	ClientID     = "live-client-id"
	ClientSecret = "live-client-secret"
)

// World is one isolated scenario: a namespace, a Finch simulator and a Ready
// FinchApp named "default" pointing at it.
type World struct {
	Namespace string
	Sim       *finchsim.Sim
	App       *finchv1.FinchApp
}

// NewWorld creates a World and waits until its FinchApp is Ready. Close
// stops its simulator.
func (e *Env) NewWorld(ctx context.Context, timeout time.Duration) (*World, error) {
	return e.NewWorldIn(ctx, timeout, "")
}

// NewWorldIn is NewWorld in a namespace of that name ("": a generated one);
// a timeout of 0 does not wait for the FinchApp.
func (e *Env) NewWorldIn(ctx context.Context, timeout time.Duration, namespace string) (*World, error) {
	sim := finchsim.New(finchsim.Options{})
	url := sim.Start()
	sim.AddApp(finchsim.AppConfig{ClientID: ClientID, ClientSecret: ClientSecret})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if namespace == "" {
		ns.GenerateName = "live-"
	}
	if err := e.Client.Create(ctx, ns); err != nil {
		sim.Close()
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	w := &World{Namespace: ns.Name, Sim: sim}
	creds := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "finch-credentials", Namespace: ns.Name},
		StringData: map[string]string{"client_id": ClientID, "client_secret": ClientSecret},
	}
	w.App = &finchv1.FinchApp{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns.Name},
		Spec: finchv1.FinchAppSpec{
			APIURL:               url,
			CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: creds.Name},
			RedirectURI:          "https://operator.example.com/callback",
		},
	}
	for _, obj := range []client.Object{creds, w.App} {
		if err := e.Client.Create(ctx, obj); err != nil {
			sim.Close()
			return nil, fmt.Errorf("create %s: %w", obj.GetName(), err)
		}
	}
	if timeout == 0 {
		return w, nil
	}
	err := Poll(ctx, timeout, func() (bool, error) {
		app := &finchv1.FinchApp{}
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(w.App), app); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(app.Status.Conditions, finchv1.ConditionReady), nil
	})
	if err != nil {
		sim.Close()
		return nil, fmt.Errorf("FinchApp %s/default Ready: %w", ns.Name, err)
	}
	return w, nil
}

// Close stops the World's simulator.
func (w *World) Close() { w.Sim.Close() }

// Connection is a FinchConnection of the World's app asking for products
// company and directory.
func (w *World) Connection(name, customer string) *finchv1.FinchConnection {
	return &finchv1.FinchConnection{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.Namespace},
		Spec: finchv1.FinchConnectionSpec{
			CustomerID: customer, CustomerName: "Customer " + customer,
			Products: []finchv1.Product{"company", "directory"},
		},
	}
}

// Poll calls cond every 100ms until it reports true or fails, or timeout passes.
func Poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not within %s", timeout)
		case <-tick.C:
		}
	}
}

// ImpersonateServiceAccount returns a ManagerConfig under which the manager
// acts as ServiceAccount namespace/name (the admin's credentials impersonate
// it), so only that ServiceAccount's RBAC applies to its requests.
func ImpersonateServiceAccount(namespace, name string) func(*rest.Config) *rest.Config {
	return func(cfg *rest.Config) *rest.Config {
		cfg = rest.CopyConfig(cfg)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + namespace + ":" + name}
		return cfg
	}
}

// ForbiddenLog records every 403 Forbidden response to the requests of the
// rest.Configs it wraps. It is safe for concurrent use.
type ForbiddenLog struct {
	mu       sync.Mutex
	requests []string
}

// Wrap returns a copy of cfg whose transport records 403 responses in l
// (after any transport wrapper cfg already has).
func (l *ForbiddenLog) Wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil && resp.StatusCode == http.StatusForbidden {
				l.mu.Lock()
				l.requests = append(l.requests, req.Method+" "+req.URL.String())
				l.mu.Unlock()
			}
			return resp, err
		})
	})
	return cfg
}

// Requests are the recorded requests ("METHOD URL"), in the order answered.
func (l *ForbiddenLog) Requests() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.requests)
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest", Namespace: "default"}
	kc.CurrentContext = "envtest"
	return clientcmd.WriteToFile(*kc, path)
}
