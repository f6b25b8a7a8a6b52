package finch

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/connectops/finch-operator/internal/budget"
)

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
		Limiter: budget.Gate{Budget: budget.New(budget.Config{Requests: n, Window: w})}, MaxAttempts: 1,
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
