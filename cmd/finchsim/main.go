// Command finchsim serves the in-memory Finch simulator (pkg/finchsim) standalone, for local
// demos and benchmarks. It speaks Finch's wire format; point a FinchApp's spec.apiURL at it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/connectops/finch-operator/pkg/finchsim"
)

const usageHeader = `finchsim serves an in-memory Finch API (Connect sessions, /auth/token, /introspect,
/disconnect, /disconnect-entity, PUT /sandbox/connections/accounts, signed account.updated and,
with --initial-sync-delay, initial data sync webhooks) over HTTP.

The Connect page is GET /authorize?session=<id>[&state=..][&provider=..][&auth_method=..][&status=..]:
a browser opening connect_url gets a page for a person (the session's customer and products, a
provider and authentication method picker, and Connect / Connect (assisted, pending) / Fail
sign-in / Cancel buttons). Scripts (no text/html in Accept, as curl and Go send) or ?auto=1
complete the session at once. Completing redirects to the session's redirect_uri with
?code=..&state=.. (or answers {"code": ".."} when the session has none); Fail sign-in and Cancel
do not redirect and leave the session open (outcome=error|cancel with auto=1).

Driver and inspection endpoints (not part of Finch):
  POST   /_sim/sessions/{id}/complete     {"provider","auth_method","status"} -> {"code"}
  POST   /_sim/connections/{id}/status    {"status":"reauth"}  (flips status, sends webhook)
  POST   /_sim/connections/{id}/entities  {"entities":[{"id","name","source_id","status"}]}  (multi-entity)
  POST   /_sim/connections/{id}/entities/{entity_id}/status  {"status":"reauth"}  (webhook with entity_id)
  POST   /_sim/connections/{id}/last-sync {"value":"any string"}  (/introspect's last_successful_sync; "" = the time)
  POST   /_sim/initial-sync {"enabled":true,"delay":"30s"}  (job.initial_data_sync_*.succeeded webhooks
                       that long after a new connection's first code exchange)
  GET    /_sim/sessions/{id}, /_sim/connections/{id}, /_sim/state
  GET    /_sim/calls, /_sim/responses;  DELETE /_sim/calls (reset counters)
  POST   /_sim/faults {"endpoint":"POST /auth/token","count":2,"status":503,"retry_after":"2s",
                       "latency":"500ms","commit_then_drop":false,"name","finch_code",
                       "body":"<verbatim body>","x_should_retry":"true",
                       "token":"<access token>","connection_id":"<id>"};  DELETE /_sim/faults
  POST   /_sim/apps   {"client_id","client_secret","webhook_url","webhook_secret",
                       "rate_limit":{"requests":20,"window":"1m"},"omit_top_level_status":false,
                       "reauth_url_field":"connect_url|url|none","session_url_field":"..."}
  POST   /_sim/ip-limit {"requests":1000,"window":"5m","penalty":"60m","no_retry_after":false}
                       (per-source-IP limit, 429 finch_api_ip_rl; zero fields = Finch's figures);
         DELETE /_sim/ip-limit (off, penalties lifted)

Usage: finchsim [flags]

Flags:
`

func main() {
	fs := flag.NewFlagSet("finchsim", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	clientID := fs.String("client-id", "", "client_id of an app to register at start (with --client-secret)")
	clientSecret := fs.String("client-secret", "", "client_secret of the app registered at start")
	webhookURL := fs.String("webhook-url", "", "where the app's account.updated webhooks are POSTed (empty: no webhooks)")
	webhookSecret := fs.String("webhook-secret", "", "the app's webhook secret, standard base64 (its decoded bytes are the HMAC-SHA256 key)")
	rateLimit := fs.Int("rate-limit", 0, "requests allowed per app and endpoint in any rolling --rate-window; 0 = no limit")
	rateWindow := fs.Duration("rate-window", time.Minute, "rate-limit sliding window")
	connectBase := fs.String("connect-base-url", "", "base URL of connect_url (default: the URL the API client used to reach the simulator)")
	logRequests := fs.Bool("log-requests", false, "log every request (method, path, status, duration)")
	ipLimit := fs.Bool("ip-limit", false, "enforce Finch's per-IP limit (429 finch_api_ip_rl), by default with Finch's figures")
	ipRequests := fs.Int("ip-limit-requests", finchsim.DefaultIPRequests, "requests allowed per source IP in any rolling --ip-limit-window")
	ipWindow := fs.Duration("ip-limit-window", finchsim.DefaultIPWindow, "per-IP sliding window")
	ipPenalty := fs.Duration("ip-limit-penalty", finchsim.DefaultIPPenalty, "how long an IP that exceeded the limit is refused")
	initialSync := fs.Duration("initial-sync-delay", 0, "send the initial data sync webhooks (job.initial_data_sync_org.succeeded, then job.initial_data_sync_payroll.succeeded) this long after a new connection's first code exchange, and the second as long after the first; 0 = none")
	omitStatus := fs.Bool("omit-top-level-status", false, "answer /introspect without a top-level connection_status (the Migration Guide's example shape) for the app given by --client-id")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fs.Usage()
		os.Exit(2)
	}
	if (*clientID == "") != (*clientSecret == "") {
		log.Fatal("finchsim: --client-id and --client-secret go together")
	}

	sim := finchsim.New(finchsim.Options{ConnectBaseURL: *connectBase, Logf: log.Printf, IPRateLimit: finchsim.IPRateLimit{
		Enabled: *ipLimit, Requests: *ipRequests, Window: *ipWindow, Penalty: *ipPenalty,
	}, InitialSync: finchsim.InitialSync{Enabled: *initialSync > 0, Delay: *initialSync}})
	if *clientID != "" {
		sim.AddApp(finchsim.AppConfig{
			ClientID: *clientID, ClientSecret: *clientSecret, WebhookURL: *webhookURL, WebhookSecret: *webhookSecret,
			RateLimit:          finchsim.RateLimit{Requests: *rateLimit, Window: *rateWindow},
			OmitTopLevelStatus: *omitStatus,
		})
	} else if *webhookURL != "" || *webhookSecret != "" || *rateLimit != 0 || *omitStatus {
		log.Print("finchsim: --webhook-url, --webhook-secret, --rate-limit and --omit-top-level-status apply to the app given by --client-id; ignored")
	}

	h := sim.Handler()
	if *logRequests {
		h = logMiddleware(h)
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("finchsim: listen %s: %v", *addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	fmt.Printf("finchsim listening on http://%s\n", l.Addr())

	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("finchsim: serve: %v", err) //nolint:gocritic // exitAfterDefer: the deferred stop() only unregisters the signal handler
		}
	case <-ctx.Done():
		log.Print("finchsim: shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Printf("finchsim: shutdown: %v", err)
		}
	}
	sim.Close()
}

func logMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &finchsim.StatusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		status := fmt.Sprint(rec.Status)
		if rec.Status == 0 {
			status = "dropped"
		}
		log.Printf("%s %s -> %s (%s) request_id=%s", r.Method, r.URL.RequestURI(), status, time.Since(start).Round(time.Microsecond), w.Header().Get("Finch-Request-Id"))
	})
}
