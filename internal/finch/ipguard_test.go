package finch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// ipLimited answers Finch's per-IP 429 (Error-Types: rate_limit_exceeded_error
// / finch_api_ip_rl), with Retry-After when retryAfter is not "".
func ipLimited(retryAfter string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		jsonHandler(429, `{"code":429,"name":"rate_limit_exceeded_error","finch_code":"finch_api_ip_rl","message":"ip"}`)(w, r)
	}
}

type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeNow) add(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

// guardClients returns two clients of different apps sharing one guard and
// one server.
func guardClients(t *testing.T, rc *recorder, g *IPGuard) (a, b *Client) {
	t.Helper()
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	mk := func(app string) *Client {
		c, err := New(Config{
			BaseURL: srv.URL, ClientID: app + "-id", ClientSecret: testClientSecret, MetricsApp: app,
			Budget: NewBudget(BudgetConfig{Requests: 1_000_000, Window: time.Minute}), IPGuard: g,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b = mk("guard-ns/app-a"), mk("guard-ns/app-b")
	t.Cleanup(func() { DeleteAppMetrics("guard-ns/app-a"); DeleteAppMetrics("guard-ns/app-b") })
	return a, b
}

func TestIPGuardStopsEveryClientAfterOneIPLimit(t *testing.T) {
	clock := &fakeNow{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	g := NewIPGuard(BudgetConfig{Requests: 1000, Window: time.Minute})
	g.now = clock.now
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"GET /introspect":        sequence(ipLimited("120"), jsonHandler(200, `{"connection_id":"c"}`)),
		"POST /connect/sessions": jsonHandler(201, sessionOK),
	}}
	a, b := guardClients(t, rc, g)

	_, err := a.Introspect(context.Background(), testToken)
	var fe *Error
	if !errors.As(err, &fe) || fe.Local || !IsIPRateLimited(err) || fe.RetryAfter != 120*time.Second {
		t.Fatalf("first answer: %v (%#v), want Finch's own 429 finch_api_ip_rl with Retry-After 120s", err, fe)
	}
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("%d requests, want 1: finch_api_ip_rl is not retried in-process", n)
	}
	wantUntil := clock.now().Add(120 * time.Second)
	if got := g.PausedUntil(); !got.Equal(wantUntil) {
		t.Fatalf("PausedUntil = %v, want %v", got, wantUntil)
	}
	if got := hostGauge(t, ""); got != float64(wantUntil.Unix()) {
		t.Errorf("penalty gauge = %v, want %d", got, wantUntil.Unix())
	}

	// The other app's client stops too, without sending.
	clock.add(20 * time.Second)
	start := time.Now()
	_, err = b.CreateSession(context.Background(), sessionReq)
	if time.Since(start) > time.Second {
		t.Errorf("refusal took %v, want at once", time.Since(start))
	}
	if !errors.As(err, &fe) || !fe.Local || fe.StatusCode != 429 || fe.FinchCode != "finch_api_ip_rl" || fe.RetryAfter != 100*time.Second {
		t.Fatalf("during the pause: %v (%#v), want a local 429 finch_api_ip_rl with RetryAfter 100s", err, fe)
	}
	if !IsIPRateLimited(err) || Classify(err) != ClassRateLimited || IsUnauthorized(err) {
		t.Errorf("local refusal: IsIPRateLimited %v, Classify %v", IsIPRateLimited(err), Classify(err))
	}
	if ra, ok := RateLimited(err); !ok || ra != 100*time.Second {
		t.Errorf("RateLimited = %v, %v", ra, ok)
	}
	if !strings.Contains(err.Error(), "per-IP") || !strings.Contains(err.Error(), "not sent") {
		t.Errorf("message %q does not say the operator is serving the per-IP penalty", err.Error())
	}
	if _, err := a.Introspect(context.Background(), testToken); !IsIPRateLimited(err) {
		t.Errorf("client A during the pause: %v", err)
	}
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("%d requests reached the server during the pause, want none", n)
	}
	if d := g.Delay(); d != 100*time.Second {
		t.Errorf("Delay = %v, want the rest of the penalty (100s)", d)
	}

	// Metrics: the refusals are counted, and not as Finch responses.
	got := strings.Join(append(series(t, "guard-ns/app-a"), series(t, "guard-ns/app-b")...), "\n")
	for _, want := range []string{
		"finch_api_ip_penalty_refused_total{app=guard-ns/app-b,endpoint=POST /connect/sessions} 1",
		"finch_api_ip_penalty_refused_total{app=guard-ns/app-a,endpoint=GET /introspect} 1",
		"finch_api_requests_total{app=guard-ns/app-a,code=429,endpoint=GET /introspect} 1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "finch_api_requests_total{app=guard-ns/app-b") {
		t.Errorf("a local refusal was counted as a Finch response:\n%s", got)
	}

	// After the penalty both clients send again.
	clock.add(100 * time.Second)
	if !g.PausedUntil().IsZero() || g.Delay() != 0 {
		t.Fatalf("after the penalty: PausedUntil %v, Delay %v", g.PausedUntil(), g.Delay())
	}
	if got := hostGauge(t, ""); got != 0 {
		t.Errorf("penalty gauge = %v after the penalty, want 0", got)
	}
	if _, err := a.Introspect(context.Background(), testToken); err != nil {
		t.Errorf("client A after the penalty: %v", err)
	}
	if _, err := b.CreateSession(context.Background(), sessionReq); err != nil {
		t.Errorf("client B after the penalty: %v", err)
	}
}

func TestIPGuardDefaultPenaltyAndNoShortening(t *testing.T) {
	clock := &fakeNow{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	g := NewIPGuard(BudgetConfig{})
	g.now = clock.now
	if cfg := g.Budget().Config(); cfg != DefaultIPBudget {
		t.Errorf("default guard budget %+v, want Finch's %+v", cfg, DefaultIPBudget)
	}
	// Finch documents no Retry-After: the guard pauses for the documented 60 minutes.
	g.penalize(0)
	if want := clock.now().Add(time.Hour); !g.PausedUntil().Equal(want) {
		t.Errorf("PausedUntil = %v, want now+60m", g.PausedUntil())
	}
	// A later, shorter answer does not cut the pause.
	g.penalize(time.Minute)
	if want := clock.now().Add(time.Hour); !g.PausedUntil().Equal(want) {
		t.Errorf("PausedUntil = %v after a shorter Retry-After, want still now+60m", g.PausedUntil())
	}
	clock.add(30 * time.Minute)
	g.penalize(50 * time.Minute)
	if want := clock.now().Add(50 * time.Minute); !g.PausedUntil().Equal(want) {
		t.Errorf("PausedUntil = %v, want extended to now+50m", g.PausedUntil())
	}
}

// A Retry-After beyond Finch's documented 60-minute penalty is cut to it: a
// server that is not Finch (or a proxy) cannot pause the operator for a day.
func TestIPGuardCapsThePenaltyAtFinchsSixtyMinutes(t *testing.T) {
	clock := &fakeNow{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	g := NewIPGuard(BudgetConfig{})
	g.now = clock.now
	rc := &recorder{routes: map[string]http.HandlerFunc{"GET /introspect": ipLimited("86400")}}
	a, _ := guardClients(t, rc, g)
	_, err := a.Introspect(context.Background(), testToken)
	if !IsIPRateLimited(err) {
		t.Fatalf("%v, want the 429 finch_api_ip_rl", err)
	}
	if want := clock.now().Add(MaxIPPenalty); !g.PausedUntil().Equal(want) {
		t.Errorf("PausedUntil = %v after Retry-After: 86400, want now+60m (%v)", g.PausedUntil(), want)
	}
	if d := g.Delay(); d != time.Hour {
		t.Errorf("Delay = %v, want 1h", d)
	}
}

// One guard per API host: scheme, host and port, the default port spelled
// out; a penalty at one host leaves the others' guards alone.
func TestIPGuardsOnePerHost(t *testing.T) {
	s := NewIPGuards(BudgetConfig{Requests: 5, Window: time.Minute})
	get := func(raw string) *IPGuard {
		t.Helper()
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		g, err := s.For(u)
		if err != nil {
			t.Fatalf("For(%s): %v", raw, err)
		}
		return g
	}
	finch := get("https://api.tryfinch.com")
	if get("https://API.tryfinch.com:443/v1") != finch {
		t.Error("https://API.tryfinch.com:443/v1 got another guard than https://api.tryfinch.com")
	}
	if finch.Host() != "https://api.tryfinch.com:443" {
		t.Errorf("Host() = %q", finch.Host())
	}
	sim, stub := get("http://127.0.0.1:8090"), get("http://127.0.0.1:8091")
	if sim == stub || sim == finch || get("http://api.tryfinch.com") == finch {
		t.Fatal("different scheme, host or port share a guard")
	}
	if cfg := stub.Budget().Config(); cfg.Requests != 5 || cfg.Window != time.Minute {
		t.Errorf("guard budget %+v, want the set's", cfg)
	}
	stub.penalize(24 * time.Hour)
	if stub.PausedUntil().IsZero() || !sim.PausedUntil().IsZero() || !finch.PausedUntil().IsZero() {
		t.Errorf("penalty at the stub: stub %v, sim %v, finch %v; want only the stub paused", stub.PausedUntil(), sim.PausedUntil(), finch.PausedUntil())
	}
	if got := hostGauge(t, stub.Host()); got <= 0 || got > float64(time.Now().Add(time.Hour+time.Second).Unix()) {
		t.Errorf("penalty gauge for %s = %v, want at most an hour ahead", stub.Host(), got)
	}
	if got := hostGauge(t, sim.Host()); got != 0 {
		t.Errorf("penalty gauge for %s = %v, want 0", sim.Host(), got)
	}
	if _, err := s.For(&url.URL{Scheme: "ftp", Host: "x"}); err == nil {
		t.Error("For(ftp://x) = nil error")
	}
}

// The set is bounded: past MaxIPGuards hosts it refuses new ones, and keeps
// serving the hosts it has.
func TestIPGuardsBounded(t *testing.T) {
	s := NewIPGuards(BudgetConfig{})
	first, err := s.For(&url.URL{Scheme: "http", Host: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for port := 2; port <= MaxIPGuards; port++ {
		if _, err := s.For(&url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}); err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
	}
	if _, err := s.For(&url.URL{Scheme: "http", Host: "127.0.0.1:65000"}); !errors.Is(err, ErrTooManyHosts) {
		t.Errorf("host %d: %v, want ErrTooManyHosts", MaxIPGuards+1, err)
	}
	if g, err := s.For(&url.URL{Scheme: "http", Host: "127.0.0.1:1"}); err != nil || g != first {
		t.Errorf("a known host after the bound: %v, %v", g, err)
	}
	for port := 1; port <= MaxIPGuards; port++ {
		ipPenaltyUntil.DeleteLabelValues(fmt.Sprintf("http://127.0.0.1:%d", port))
	}
}

// hostGauge reads finch_api_ip_penalty_until_seconds{host=host}.
func hostGauge(t *testing.T, host string) float64 {
	t.Helper()
	g, err := ipPenaltyUntil.GetMetricWithLabelValues(host)
	if err != nil {
		t.Fatal(err)
	}
	m := &dto.Metric{}
	if err := g.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func TestIPGuardBudgetCapsAllApps(t *testing.T) {
	const limit, perApp = 5, 6
	window := 300 * time.Millisecond
	g := NewIPGuard(BudgetConfig{Requests: limit, Window: window})
	var served atomic.Int32
	rc := &recorder{routes: map[string]http.HandlerFunc{"GET /introspect": func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		jsonHandler(200, `{}`)(w, r)
	}}}
	a, b := guardClients(t, rc, g)
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range []*Client{a, b} {
		for range perApp {
			wg.Go(func() {
				if _, err := c.Introspect(context.Background(), testToken); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	// 12 calls at 5 per window need at least two full windows after the
	// first; the per-app budgets alone would let them all through at once.
	if elapsed, lower := time.Since(start), 2*window; elapsed < lower {
		t.Errorf("12 calls took %v, less than the guard allows (%v)", elapsed, lower)
	}
	if served.Load() != 2*perApp {
		t.Errorf("served %d, want %d", served.Load(), 2*perApp)
	}
}

func TestIPGuardGivesBackTheAppSlotWhenCancelled(t *testing.T) {
	g := NewIPGuard(BudgetConfig{Requests: 1, Window: time.Hour})
	rc := &recorder{}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	appBudget := NewBudget(BudgetConfig{Requests: 2, Window: time.Hour})
	c, err := New(Config{BaseURL: srv.URL, Budget: appBudget, IPGuard: g})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Introspect(context.Background(), testToken); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Introspect(ctx, testToken); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second call: %v, want to give up waiting for the guard's budget", err)
	}
	// The app slot taken before waiting for the guard was given back: one of
	// the app's two slots is still free.
	if d := appBudget.Delay(EndpointIntrospect); d != 0 {
		t.Errorf("app budget Delay = %v, want 0 (the abandoned call's slot released)", d)
	}
	if d := g.Delay(); d < 59*time.Minute {
		t.Errorf("guard Delay = %v, want about an hour (its one slot is used)", d)
	}
	if n := len(rc.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}
