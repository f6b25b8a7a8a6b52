// Package inbound is the operator's public HTTP server: the redirect-flow
// callback that employers' browsers reach after Finch Connect
// (GET /callback/{namespace}/{app}), the Finch webhook receiver
// (POST /webhooks/{namespace}/{app}) and a health check for the Ingress
// (GET /healthz).
//
// Every replica serves it (the Service may route to any pod). The callback
// exchanges the code and writes the token Secret itself; the webhook receiver
// never calls Finch: it verifies the delivery and records it as annotations on
// the FinchConnection, and the controller on the leader acts on them.
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
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/connectops/finch-operator/controllers"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultDedupSize    = 10000

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
	// usedCodeTTL is how long an exchanged code is remembered (Finch codes
	// live 10 minutes), so a reload of the callback shows the same result
	// instead of "already used".
	usedCodeTTL  = 10 * time.Minute
	usedCodeSize = 4096
	// maxCodeLen bounds the code parameter; Finch codes are UUIDs.
	maxCodeLen = 512
)

// Config configures the inbound server.
type Config struct {
	// Client is the manager's cached client; it has the field indexes.
	Client client.Client
	// APIReader reads uncached (token Secrets, and a fallback when the cache may lag).
	APIReader client.Reader
	// Apps resolves a FinchApp into its Finch client and webhook secret.
	Apps *controllers.AppRegistry
	// Recorder records Events (nil: none).
	Recorder recorder.EventRecorder
	// MaxBodyBytes bounds a webhook body (default 1 MiB); larger is answered 413.
	MaxBodyBytes int64
	// DedupSize is how many Finch-Event-Ids are remembered (default 10000).
	DedupSize int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log is the logger (default ctrl.Log.WithName("inbound")).
	Log logr.Logger
}

// What the inbound server reads and writes (a subset of the controllers' rules,
// listed so the server's needs stay visible in the generated ClusterRole):
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchapps,verbs=get;list;watch
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
}

// New returns a Server. Client, APIReader and Apps are required.
func New(cfg Config) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.DedupSize <= 0 {
		cfg.DedupSize = DefaultDedupSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
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
	}
	mux := http.NewServeMux()
	mux.Handle("GET /callback/{namespace}/{app}", s.instrument(routeCallback, http.HandlerFunc(s.handleCallback)))
	// Any other shape of callback URL gets the same page as a bad parameter.
	mux.Handle("/callback/", s.instrument(routeCallback, http.HandlerFunc(s.handleBadCallback)))
	mux.Handle("POST /webhooks/{namespace}/{app}", s.instrument(routeWebhook, http.HandlerFunc(s.handleWebhook)))
	mux.Handle("GET /healthz", s.instrument(routeHealthz, http.HandlerFunc(handleHealthz)))
	mux.Handle("/", s.instrument(routeOther, http.NotFoundHandler()))
	s.mux = mux
	return s
}

// Handler returns the server's routes.
func (s *Server) Handler() http.Handler { return s.mux }

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
	return &runnable{addr: addr, handler: s.Handler(), log: s.log}
}

type runnable struct {
	addr    string
	handler http.Handler
	log     logr.Logger
}

var (
	_ manager.Runnable               = (*runnable)(nil)
	_ manager.LeaderElectionRunnable = (*runnable)(nil)
)

// NeedLeaderElection is false: webhooks and callbacks may reach any replica.
func (r *runnable) NeedLeaderElection() bool { return false }

// Start serves until ctx is done, then shuts down gracefully.
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
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return err
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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
