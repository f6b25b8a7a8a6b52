// Package inbound is the operator's public HTTP server: the redirect-flow
// callback that employers' browsers reach after Finch Connect
// (GET /callback/{namespace}/{app}/{path}), the Finch webhook receiver
// (POST /webhooks/{namespace}/{app}), the same two for ClusterFinchApps
// (GET /cluster/callback/{app}/{path}, POST /cluster/webhooks/{app}) and a
// health check for the Ingress (GET /healthz).
//
// Every replica serves it (the Service may route to any pod). The callback
// exchanges the code and writes the token Secret itself; the webhook receiver
// never calls Finch: it verifies the delivery, answers once the event is
// queued, and its workers record it as annotations on the FinchConnection,
// which the controller on the leader acts on.
//
// Security: responses are fixed pages or fixed JSON, so none carries a token,
// a code or a hint whether an app or connection exists; signatures are
// compared in constant time (finch.Verify); header and body sizes are bounded;
// tokens and codes are never logged.
package inbound

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/budget"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes     = 1 << 20
	DefaultDedupSize        = 10000
	DefaultWebhookQueueSize = 10000
	DefaultWebhookWorkers   = 8

	// Timeouts of the http.Server built by Runnable.
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 60 * time.Second
	IdleTimeout       = 120 * time.Second
	MaxHeaderBytes    = 16 << 10

	// shutdownTimeout bounds the graceful shutdown (in-flight exchanges finish).
	shutdownTimeout = 30 * time.Second
	// exchangeTimeout bounds the code exchange (including waiting for the
	// app's request budget); storeTimeout bounds writing the token afterwards.
	// Both outlive the browser's request: a code is single-use, so once it is
	// sent to Finch the token must be stored even if the employer closes the tab.
	exchangeTimeout = 40 * time.Second
	storeTimeout    = 15 * time.Second
	// apiTimeout bounds Kubernetes reads and the webhook's annotation patch.
	apiTimeout = 10 * time.Second
	// exchangeMaxBlock is the longest a callback's exchange may wait for the
	// app's Finch budget (apps.App.Admit), leaving the rest of
	// exchangeTimeout to the request itself.
	exchangeMaxBlock = exchangeTimeout / 2
	// usedCodeTTL is how long an exchanged code is remembered (Finch codes
	// live 10 minutes), so a reload of the callback shows the same result
	// instead of "already used".
	usedCodeTTL  = 10 * time.Minute
	usedCodeSize = 4096
	// maxCodeLen bounds the code parameter; Finch codes are UUIDs.
	maxCodeLen = 512
	// maxStateLen bounds the state parameter (a session ID and a MAC).
	maxStateLen = 512
	// maxSessionExchanges is how many codes one session may have exchanged
	// at once (per replica); then one a minute. A session yields one real
	// code: a leaked Connect link cannot drain the budget.
	maxSessionExchanges = 3
	// callbackBudgetKey is the one key of the callback exchange ceiling.
	callbackBudgetKey = "callback"

	// Defaults of the callback limits.
	DefaultCallbackIPBurst     = 10
	DefaultCallbackIPInterval  = 6 * time.Second
	DefaultCallbackAppBurst    = 50
	DefaultCallbackAppInterval = time.Second
)

// DefaultCallbackExchanges is the default ceiling on callback code exchanges
// per app: half of Finch's documented per-endpoint limit (about 20 per minute,
// docs/finch-api.md#rate-limits), so a flood of callbacks can never take the token endpoint
// from reconciles, whose embedded hand-offs keep the other half.
var DefaultCallbackExchanges = budget.Config{Requests: 10, Window: time.Minute}

// Config configures the inbound server.
type Config struct {
	// Client is the manager's cached client; it has the field indexes.
	Client client.Client
	// APIReader reads uncached (token Secrets, and a fallback when the cache may lag).
	APIReader client.Reader
	// Apps resolves a FinchApp into its Finch client and webhook secret.
	Apps *apps.Registry
	// Namespaces the operator watches (--watch-namespaces; none: all). A
	// callback or webhook for an app elsewhere, or for a ClusterFinchApp when
	// the list is set, is refused like an unknown app, without reading
	// anything.
	Namespaces []string
	// Recorder records Events (nil: none).
	Recorder recorder.EventRecorder
	// MaxBodyBytes bounds a webhook body (default 1 MiB); larger is answered 413.
	MaxBodyBytes int64
	// DedupSize is how many Finch-Event-Ids are remembered (default 10000).
	DedupSize int
	// WebhookQueueSize bounds the connections with a verified webhook event
	// waiting to be recorded (default 10000); beyond, deliveries are answered
	// 503 and Finch retries them. WebhookWorkers record them (default 8).
	WebhookQueueSize int
	WebhookWorkers   int
	// TrustedProxies are the proxies (Ingress controllers, load balancers)
	// whose X-Forwarded-For is believed; others are the client themselves.
	TrustedProxies []netip.Prefix
	// CallbackIPBurst unverifiable callbacks (no valid signed state) per
	// client address, then one per CallbackIPInterval (defaults 10 and 6s),
	// answered 429 beyond. Callbacks with a valid state never draw from it.
	CallbackIPBurst    int
	CallbackIPInterval time.Duration
	// CallbackAppBurst refused (unverifiable) callbacks per app named in the
	// path, whether it exists or not, then one per CallbackAppInterval
	// (defaults 50 and 1s), answered 429 beyond. Callbacks with a valid
	// signed state for a live session never draw from it.
	CallbackAppBurst    int
	CallbackAppInterval time.Duration
	// CallbackExchanges is the ceiling on code exchanges the callback makes
	// per FinchApp, and per namespace of a ClusterFinchApp (default
	// DefaultCallbackExchanges).
	CallbackExchanges budget.Config
	// AllowStatelessCallbacks accepts callbacks without a state parameter
	// (--callback-require-state=false), for the case Finch Connect does not
	// return it: they are exchanged with the app's callback URL and matched by
	// the customer_id Finch echoes, within the same limits and ceiling. A
	// state that is present must still be valid.
	AllowStatelessCallbacks bool
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log is the logger (default ctrl.Log.WithName("inbound")).
	Log logr.Logger
}

// What the inbound server reads and writes (a subset of the controllers' rules,
// listed so the server's needs stay visible in the generated ClusterRole):
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchapps,verbs=get;list;watch
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=clusterfinchapps,verbs=get;list;watch
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchconnections,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Server serves the callback, the webhooks and /healthz.
type Server struct {
	cfg     Config
	log     logr.Logger
	seen    *lru[struct{}] // app key + "\x00" + Finch-Event-Id of handled webhooks
	codes   *codeTracker   // exchanged codes (hashed) and exchanges in flight
	limiter *eventLimiter  // Warning events caused by unauthenticated requests
	mux     *http.ServeMux
	handler http.Handler // mux behind cleanPaths

	ipLimiter      *eventLimiter  // callbacks per client address
	appLimiter     *eventLimiter  // refused callbacks per app
	sessionLimiter *eventLimiter  // code exchanges per session
	sessionMisses  *lru[struct{}] // verified states whose session the API server does not know
	budgetMu       sync.Mutex
	budgets        map[string]*budget.Budget // callback exchange ceiling per app (and namespace)

	resolver *appResolver  // apps.Registry.Get, remembering apps that fail to resolve
	webhooks *webhookQueue // verified webhook events waiting to be recorded

	proxyWarned atomic.Int64 // unix nanoseconds of the last warnUntrustedProxy line

	serving atomic.Bool // the Runnable's listener accepts connections
}

// New returns a Server. Client, APIReader and Apps are required.
func New(cfg Config) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.DedupSize <= 0 {
		cfg.DedupSize = DefaultDedupSize
	}
	if cfg.WebhookQueueSize <= 0 {
		cfg.WebhookQueueSize = DefaultWebhookQueueSize
	}
	if cfg.WebhookWorkers <= 0 {
		cfg.WebhookWorkers = DefaultWebhookWorkers
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CallbackIPBurst <= 0 {
		cfg.CallbackIPBurst = DefaultCallbackIPBurst
	}
	if cfg.CallbackIPInterval <= 0 {
		cfg.CallbackIPInterval = DefaultCallbackIPInterval
	}
	if cfg.CallbackAppBurst <= 0 {
		cfg.CallbackAppBurst = DefaultCallbackAppBurst
	}
	if cfg.CallbackAppInterval <= 0 {
		cfg.CallbackAppInterval = DefaultCallbackAppInterval
	}
	if cfg.CallbackExchanges.Requests <= 0 || cfg.CallbackExchanges.Window <= 0 {
		cfg.CallbackExchanges = DefaultCallbackExchanges
	}
	log := cfg.Log
	if log.GetSink() == nil {
		log = ctrl.Log.WithName("inbound")
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		seen:    newLRU[struct{}](cfg.DedupSize, 0, cfg.Now),
		codes:   newCodeTracker(usedCodeSize, usedCodeTTL, cfg.Now),
		limiter: newEventLimiter(5, 30*time.Second, cfg.Now),

		ipLimiter:      newEventLimiter(cfg.CallbackIPBurst, cfg.CallbackIPInterval, cfg.Now),
		appLimiter:     newEventLimiter(cfg.CallbackAppBurst, cfg.CallbackAppInterval, cfg.Now),
		sessionLimiter: newEventLimiter(maxSessionExchanges, time.Minute, cfg.Now),
		sessionMisses:  newLRU[struct{}](usedCodeSize, time.Minute, cfg.Now),
		budgets:        map[string]*budget.Budget{},
		resolver:       newAppResolver(cfg.Apps, cfg.Now),
	}
	s.webhooks = newWebhookQueue(cfg.WebhookQueueSize, cfg.WebhookWorkers, s.recordEvent, log)
	mux := http.NewServeMux()
	mux.Handle("GET /callback/{namespace}/{app}/{path}", s.instrument(routeCallback, http.HandlerFunc(s.handleCallback)))
	mux.Handle("GET /"+apps.ClusterPathPrefix+"/callback/{app}/{path}", s.instrument(routeCallback, http.HandlerFunc(s.handleCallback)))
	// Any other shape of callback URL gets the same page as a bad parameter.
	mux.Handle("/callback/", s.instrument(routeCallback, http.HandlerFunc(s.handleBadCallback)))
	mux.Handle("/"+apps.ClusterPathPrefix+"/callback/", s.instrument(routeCallback, http.HandlerFunc(s.handleBadCallback)))
	// Without these the mux would answer /callback?code=… with a redirect to
	// /callback/?code=…, repeating the code in Location.
	mux.Handle("/callback", s.instrument(routeCallback, http.HandlerFunc(s.handleBadCallback)))
	mux.Handle("/"+apps.ClusterPathPrefix+"/callback", s.instrument(routeCallback, http.HandlerFunc(s.handleBadCallback)))
	mux.Handle("POST /webhooks/{namespace}/{app}", s.instrument(routeWebhook, http.HandlerFunc(s.handleWebhook)))
	mux.Handle("POST /"+apps.ClusterPathPrefix+"/webhooks/{app}", s.instrument(routeWebhook, http.HandlerFunc(s.handleWebhook)))
	mux.Handle("GET /healthz", s.instrument(routeHealthz, http.HandlerFunc(handleHealthz)))
	mux.Handle("/", s.instrument(routeOther, http.NotFoundHandler()))
	s.mux = mux
	s.handler = s.cleanPaths(mux)
	return s
}

// Handler returns the server's routes.
func (s *Server) Handler() http.Handler { return s.handler }

// cleanPaths answers a request whose path is not canonical (//callback/…,
// /callback/../…) with 404 itself. Go's ServeMux would answer it with a
// redirect to the cleaned path that repeats the query (the code and the
// state) in Location, outside the handlers that set no-store and
// Referrer-Policy.
func (s *Server) cleanPaths(mux http.Handler) http.Handler {
	notFound := s.instrument(routeOther, http.NotFoundHandler())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "" || p != cleanPath(p) {
			notFound.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cleanPath is the canonical form ServeMux redirects to: rooted, no empty,
// "." or ".." elements, a trailing slash kept.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// watched reports whether ns is one the operator watches.
func (s *Server) watched(ns string) bool {
	return len(s.cfg.Namespaces) == 0 || slices.Contains(s.cfg.Namespaces, ns)
}

// pathApp is the app key a callback or webhook path names: namespace and
// name, or for the /cluster/ routes (no namespace in the path) a
// ClusterFinchApp's name alone. ok is false when the path holds no valid
// names.
func pathApp(r *http.Request) (key types.NamespacedName, ok bool) {
	key = types.NamespacedName{Namespace: r.PathValue("namespace"), Name: r.PathValue("app")}
	if len(validation.IsDNS1123Subdomain(key.Name)) > 0 {
		return key, false
	}
	if key.Namespace == "" {
		return key, strings.HasPrefix(r.URL.Path, "/"+apps.ClusterPathPrefix+"/")
	}
	return key, len(validation.IsDNS1123Label(key.Namespace)) == 0
}

// getApp reads the app a path names from the cache: a FinchApp in a watched
// namespace, or a ClusterFinchApp when the operator watches all namespaces;
// anything else is NotFound, without a read.
func (s *Server) getApp(ctx context.Context, key types.NamespacedName) (finchv1.AppObject, error) {
	app := finchv1.NewAppObject(key)
	if key.Namespace == "" && len(s.cfg.Namespaces) > 0 || key.Namespace != "" && !s.watched(key.Namespace) {
		return app, apierrors.NewNotFound(finchv1.GroupVersion.WithResource("finchapps").GroupResource(), key.Name)
	}
	return app, s.cfg.Client.Get(ctx, key, app)
}

// connectionScope lists across the namespaces an app's connections may be
// in: its own for a FinchApp, all for a ClusterFinchApp (uncached fallbacks).
func connectionScope(key types.NamespacedName) []client.ListOption {
	if key.Namespace == "" {
		return nil
	}
	return []client.ListOption{client.InNamespace(key.Namespace)}
}

func handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok"))
}

// instrument sets the security headers and observes the request duration.
func (s *Server) instrument(route string, h http.Handler) http.Handler {
	obs := requestDuration.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		setSecurityHeaders(w.Header())
		h.ServeHTTP(w, r)
		obs.Observe(time.Since(start).Seconds())
	})
}

// Runnable returns a manager.Runnable that serves Handler on addr. It does not
// need leader election: every replica serves.
func (s *Server) Runnable(addr string) manager.Runnable {
	return &runnable{addr: addr, handler: s.Handler(), log: s.log, drain: s.DrainWebhooks, serving: &s.serving}
}

// errNotServing is the readiness failure until the listener is up and once
// shutdown has begun.
var errNotServing = errors.New("the inbound server is not accepting connections")

// ReadyCheck is a readiness check (healthz.Checker) that passes while the
// Runnable's listener accepts connections. The manager starts it only after
// its caches have synced, long after the probe server answers, so without
// it a Pod would be Ready, and the Service would route callbacks and
// webhooks to it, while its inbound port still refuses them.
func (s *Server) ReadyCheck(*http.Request) error {
	if !s.serving.Load() {
		return errNotServing
	}
	return nil
}

type runnable struct {
	addr    string
	handler http.Handler
	log     logr.Logger
	drain   func(context.Context) error // records the queued webhook events
	serving *atomic.Bool
}

var (
	_ manager.Runnable               = (*runnable)(nil)
	_ manager.LeaderElectionRunnable = (*runnable)(nil)
)

// NeedLeaderElection is false: webhooks and callbacks may reach any replica.
func (r *runnable) NeedLeaderElection() bool { return false }

// Start serves until ctx is done, then shuts down gracefully: it stops
// accepting, lets requests in flight finish, then records every webhook event
// still queued (the pod's termination grace period bounds it).
func (r *runnable) Start(ctx context.Context) error {
	// Requests keep the background context: shutdown lets in-flight ones finish.
	srv := newHTTPServer(r.handler)
	l, err := net.Listen("tcp", r.addr)
	if err != nil {
		return err
	}
	r.log.Info("serving inbound endpoints", "addr", l.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	r.serving.Store(true)
	defer r.serving.Store(false)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	r.serving.Store(false)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		_ = r.drain(sctx)
		return err
	}
	derr := r.drain(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return derr
}

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}
