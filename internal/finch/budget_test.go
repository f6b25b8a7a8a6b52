package finch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// maxInWindow returns the largest number of times within any half-open
// window (t-w, t].
func maxInWindow(times []time.Time, w time.Duration) int {
	best := 0
	for i := range times {
		n := 0
		for j := range times {
			if !times[j].After(times[i]) && times[j].After(times[i].Add(-w)) {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

func TestBudgetSlidingWindow(t *testing.T) {
	const n, w = 5, 200 * time.Millisecond
	b := NewBudget(BudgetConfig{Requests: n, Window: w})
	ctx := context.Background()
	start := time.Now()
	var starts []time.Time
	for range 15 {
		if err := b.Wait(ctx, EndpointIntrospect); err != nil {
			t.Fatal(err)
		}
		starts = append(starts, time.Now())
	}
	if d := time.Since(start); d < 2*w {
		t.Errorf("15 waits took %v, want >= %v", d, 2*w)
	}
	if got := maxInWindow(starts, w); got > n {
		t.Errorf("%d starts in one %v window, want <= %d", got, w, n)
	}
	// The first n go through at once (no artificial spacing).
	if d := starts[n-1].Sub(start); d > 50*time.Millisecond {
		t.Errorf("first %d waits took %v", n, d)
	}
}

func TestBudgetConcurrentWaiters(t *testing.T) {
	const n, w = 4, 150 * time.Millisecond
	b := NewBudget(BudgetConfig{Requests: n, Window: w})
	var mu sync.Mutex
	var starts []time.Time
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for range 3 {
				if err := b.Wait(context.Background(), EndpointCreateSession); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				starts = append(starts, time.Now())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got := maxInWindow(starts, w); got > n {
		t.Errorf("%d starts in one %v window, want <= %d", got, w, n)
	}
}

func TestBudgetEndpointsIndependent(t *testing.T) {
	b := NewBudget(BudgetConfig{Requests: 1, Window: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, ep := range []string{EndpointCreateSession, EndpointIntrospect, EndpointToken} {
		if err := b.Wait(ctx, ep); err != nil {
			t.Fatalf("%s: %v", ep, err)
		}
	}
}

func TestBudgetCancelUnblocksAndReleases(t *testing.T) {
	const w = 400 * time.Millisecond
	b := NewBudget(BudgetConfig{Requests: 1, Window: w})
	if err := b.Wait(context.Background(), EndpointDisconnect); err != nil {
		t.Fatal(err)
	}
	first := time.Now()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Wait(ctx, EndpointDisconnect) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v, want context.Canceled", err)
		}
	case <-time.After(200 * time.Millisecond):
		t.Fatal("cancel did not unblock Wait")
	}

	// The cancelled reservation was given back: the next slot is one window
	// after the first start, not two.
	if err := b.Wait(context.Background(), EndpointDisconnect); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(first); d < w || d > w+w/2 {
		t.Errorf("next start after %v, want about %v", d, w)
	}

	// An already-cancelled context never takes a slot.
	if err := b.Wait(ctx, EndpointIntrospect); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait(cancelled) = %v", err)
	}
}

func TestBudgetSetConfigWakesWaiters(t *testing.T) {
	b := NewBudget(BudgetConfig{Requests: 1, Window: time.Hour})
	_ = b.Wait(context.Background(), EndpointIntrospect)
	done := make(chan error, 1)
	go func() { done <- b.Wait(context.Background(), EndpointIntrospect) }()
	time.Sleep(20 * time.Millisecond)
	b.SetConfig(BudgetConfig{Requests: 10, Window: time.Hour})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("SetConfig did not let the waiter through")
	}
	if got := b.Config(); got.Requests != 10 {
		t.Errorf("Config = %+v", got)
	}
}

func TestBudgetDefaults(t *testing.T) {
	if got := NewBudget(BudgetConfig{}).Config(); got != DefaultBudget {
		t.Errorf("NewBudget(zero).Config() = %+v", got)
	}
	if got := NewBudget(BudgetConfig{Requests: 3}).Config(); got != (BudgetConfig{3, time.Minute}) {
		t.Errorf("NewBudget({3,0}).Config() = %+v", got)
	}
}

// TestBudgetNeverCauses429 runs concurrent calls through a Client against a
// server enforcing the same rule (N per rolling W per endpoint) strictly.
func TestBudgetNeverCauses429(t *testing.T) {
	const n, w = 4, 250 * time.Millisecond
	var mu sync.Mutex
	arrivals := map[string][]time.Time{}
	limited := 0
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		now := time.Now()
		ep := r.Method + " " + r.URL.Path
		mu.Lock()
		count := 0
		for _, t := range arrivals[ep] {
			if t.After(now.Add(-w)) {
				count++
			}
		}
		ok := count < n
		if ok {
			arrivals[ep] = append(arrivals[ep], now)
		} else {
			limited++
		}
		mu.Unlock()
		if !ok {
			jsonHandler(429, `{"name":"rate_limit_exceeded_error"}`)(rw, r)
			return
		}
		if ep == EndpointCreateSession {
			jsonHandler(201, sessionOK)(rw, r)
			return
		}
		jsonHandler(200, `{"connection_id":"c"}`)(rw, r)
	}))
	defer srv.Close()

	c, err := New(Config{
		BaseURL: srv.URL, ClientID: "id", ClientSecret: "secret",
		Budget: NewBudget(BudgetConfig{Requests: n, Window: w}), MaxAttempts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for range 5 {
				var err error
				if g%2 == 0 {
					_, err = c.Introspect(context.Background(), "tok")
				} else {
					_, err = c.CreateSession(context.Background(), sessionReq)
				}
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if limited > 0 {
		t.Fatalf("server rate-limited %d requests", limited)
	}
}

func TestBudgetDelayPredictsWait(t *testing.T) {
	b := NewBudget(BudgetConfig{Requests: 2, Window: time.Second})
	ctx := context.Background()
	if d := b.Delay("GET /introspect"); d > 0 {
		t.Fatalf("empty budget: Delay = %s, want 0", d)
	}
	for i := 0; i < 2; i++ {
		if err := b.Wait(ctx, "GET /introspect"); err != nil {
			t.Fatal(err)
		}
	}
	d := b.Delay("GET /introspect")
	if d < 900*time.Millisecond || d > 1100*time.Millisecond {
		t.Fatalf("full budget: Delay = %s, want about one window", d)
	}
	if d := b.Delay("POST /connect/sessions"); d > 0 {
		t.Fatalf("other endpoint: Delay = %s, want 0 (budgets are per endpoint)", d)
	}
	// Delay reserves nothing.
	if d2 := b.Delay("GET /introspect"); d2 > d {
		t.Fatalf("Delay must not reserve: %s then %s", d, d2)
	}
}

func TestBudgetCountsSlowRequestsFromTheirResponse(t *testing.T) {
	// A request that took long may have reached Finch late; the next request
	// beyond the limit must wait a full window after its response, not its start.
	b := NewBudget(BudgetConfig{Requests: 1, Window: 100 * time.Millisecond})
	ctx := context.Background()
	slot, err := b.acquire(ctx, "GET /introspect")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // the slow round trip
	done := time.Now()
	b.complete("GET /introspect", slot, done)
	next, err := b.acquire(ctx, "GET /introspect")
	if err != nil {
		t.Fatal(err)
	}
	if gap := next.Sub(done); gap < 100*time.Millisecond {
		t.Fatalf("next request %s after the slow one's response, want at least one window", gap)
	}
}
