package finch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/connectops/finch-operator/internal/budget"
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

// hostGauge reads finch_api_ip_penalty_until_timestamp_seconds{host=host} (kept by
// the guard, in internal/budget) from the controller-runtime registry.
func hostGauge(t *testing.T, host string) float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "finch_api_ip_penalty_until_timestamp_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "host" && lp.GetValue() == host {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no finch_api_ip_penalty_until_timestamp_seconds{host=%q}", host)
	return 0
}

// guardClients returns two clients of different apps sharing one guard and
// one server.
func guardClients(t *testing.T, rc *recorder, g *budget.IPGuard) (a, b *Client) {
	t.Helper()
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	mk := func(app string) *Client {
		c, err := New(Config{
			BaseURL: srv.URL, ClientID: app + "-id", ClientSecret: testClientSecret, MetricsApp: types.NamespacedName{Namespace: "guard-ns", Name: app},
			Limiter: budget.Gate{Budget: budget.New(budget.Config{Requests: 1_000_000, Window: time.Minute}), Guard: g},
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b = mk("app-a"), mk("app-b")
	t.Cleanup(func() {
		DeleteAppMetrics(types.NamespacedName{Namespace: "guard-ns", Name: "app-a"})
		DeleteAppMetrics(types.NamespacedName{Namespace: "guard-ns", Name: "app-b"})
	})
	return a, b
}

func TestIPGuardStopsEveryClientAfterOneIPLimit(t *testing.T) {
	clock := &fakeNow{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	g := budget.NewIPGuard(budget.Config{Requests: 1000, Window: time.Minute})
	g.WithClock(clock.now)
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
	got := strings.Join(append(series(t, "FinchApp/app-a"), series(t, "FinchApp/app-b")...), "\n")
	for _, want := range []string{
		"finch_api_ip_penalty_refused_total{app=FinchApp/app-b,endpoint=POST /connect/sessions,namespace=guard-ns} 1",
		"finch_api_ip_penalty_refused_total{app=FinchApp/app-a,endpoint=GET /introspect,namespace=guard-ns} 1",
		"finch_api_requests_total{app=FinchApp/app-a,code=429,endpoint=GET /introspect,namespace=guard-ns} 1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "finch_api_requests_total{app=FinchApp/app-b,") {
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

// A Retry-After beyond Finch's documented 60-minute penalty is cut to it: a
// server that is not Finch (or a proxy) cannot pause the operator for a day.
func TestIPGuardCapsThePenaltyAtFinchsSixtyMinutes(t *testing.T) {
	clock := &fakeNow{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	g := budget.NewIPGuard(budget.Config{})
	g.WithClock(clock.now)
	rc := &recorder{routes: map[string]http.HandlerFunc{"GET /introspect": ipLimited("86400")}}
	a, _ := guardClients(t, rc, g)
	_, err := a.Introspect(context.Background(), testToken)
	if !IsIPRateLimited(err) {
		t.Fatalf("%v, want the 429 finch_api_ip_rl", err)
	}
	if want := clock.now().Add(budget.MaxIPPenalty); !g.PausedUntil().Equal(want) {
		t.Errorf("PausedUntil = %v after Retry-After: 86400, want now+60m (%v)", g.PausedUntil(), want)
	}
	if d := g.Delay(); d != time.Hour {
		t.Errorf("Delay = %v, want 1h", d)
	}
}

func TestIPGuardBudgetCapsAllApps(t *testing.T) {
	const limit, perApp = 5, 6
	window := 300 * time.Millisecond
	g := budget.NewIPGuard(budget.Config{Requests: limit, Window: window})
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
	g := budget.NewIPGuard(budget.Config{Requests: 1, Window: time.Hour})
	rc := &recorder{}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	appBudget := budget.New(budget.Config{Requests: 2, Window: time.Hour})
	c, err := New(Config{BaseURL: srv.URL, Limiter: budget.Gate{Budget: appBudget, Guard: g}})
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
