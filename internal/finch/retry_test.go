package finch

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectops/finch-operator/internal/budget"
)

var sessionReq = SessionRequest{CustomerID: "cust-1", CustomerName: "Acme", Products: []string{"company"}}

const sessionOK = `{"session_id":"sess-1","connect_url":"https://connect.tryfinch.com/authorize?session=sess-1"}`

func TestCreateSessionRetries5xx(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /connect/sessions": sequence(jsonHandler(500, `{"name":"server_error"}`), jsonHandler(201, sessionOK)),
	}}
	c := newTestClient(t, rc, nil)
	start := time.Now()
	resp, err := c.CreateSession(context.Background(), sessionReq)
	if err != nil || resp.SessionID != "sess-1" {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	if n := len(rc.requests()); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	// The first backoff is 0.5s ±25%.
	if d := time.Since(start); d < 375*time.Millisecond {
		t.Errorf("retried after %v, want backoff >= 375ms", d)
	}
	// Both attempts carry the same body.
	reqs := rc.requests()
	if reqs[0].Raw != reqs[1].Raw || reqs[1].Raw == "" {
		t.Errorf("bodies differ: %q vs %q", reqs[0].Raw, reqs[1].Raw)
	}
}

func TestCreateSessionGivesUpAfterMaxAttempts(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /connect/sessions": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After-Ms", "10")
			jsonHandler(503, `{"name":"server_error"}`)(w, r)
		},
	}}
	c := newTestClient(t, rc, func(c *Config) { c.MaxAttempts = 4 })
	_, err := c.CreateSession(context.Background(), sessionReq)
	if Classify(err) != ClassTransient {
		t.Fatalf("err %v class %v", err, Classify(err))
	}
	if n := len(rc.requests()); n != 4 {
		t.Fatalf("%d requests, want 4", n)
	}
}

func TestReauthenticateNotRetriedOn5xx(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /connect/sessions/reauthenticate": sequence(jsonHandler(500, `{}`), jsonHandler(201, sessionOK)),
	}}
	c := newTestClient(t, rc, nil)
	_, err := c.Reauthenticate(context.Background(), ReauthRequest{ConnectionID: "conn-1"})
	var fe *Error
	if !errors.As(err, &fe) || fe.StatusCode != 500 || Classify(err) != ClassTransient {
		t.Fatalf("err = %v", err)
	}
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestReauthenticateRetriedOn429(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /connect/sessions/reauthenticate": sequence(rateLimited("20"), jsonHandler(201, sessionOK)),
	}}
	c := newTestClient(t, rc, nil)
	if _, err := c.Reauthenticate(context.Background(), ReauthRequest{ConnectionID: "conn-1"}); err != nil {
		t.Fatal(err)
	}
	if n := len(rc.requests()); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}

func TestNetworkErrors(t *testing.T) {
	var calls atomic.Int32
	hangup := func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /connect/sessions/reauthenticate": hangup,
		"POST /auth/token":                      hangup,
		"GET /introspect":                       sequence(hangup, jsonHandler(200, `{"connection_id":"c"}`)),
	}}
	c := newTestClient(t, rc, nil)

	_, err := c.Reauthenticate(context.Background(), ReauthRequest{ConnectionID: "conn-1"})
	if err == nil || Classify(err) != ClassTransient || !strings.HasPrefix(err.Error(), "finch POST /connect/sessions/reauthenticate: ") {
		t.Fatalf("err = %v", err)
	}
	if calls.Load() != 1 {
		t.Fatalf("reauthenticate: %d calls after a network error, want 1", calls.Load())
	}
	calls.Store(0)
	if _, err := c.ExchangeCode(context.Background(), TokenRequest{Code: "abc"}); err == nil || calls.Load() != 1 {
		t.Fatalf("exchange: err %v, %d calls, want 1", err, calls.Load())
	}
	calls.Store(0)
	in, err := c.Introspect(context.Background(), testToken)
	if err != nil || in.ConnectionID != "c" || calls.Load() != 1 {
		t.Fatalf("introspect not retried after network error: %v (hangups %d)", err, calls.Load())
	}
}

func rateLimited(retryAfterMs string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if retryAfterMs != "" {
			w.Header().Set("Retry-After-Ms", retryAfterMs)
		}
		jsonHandler(429, `{"code":429,"name":"rate_limit_exceeded_error","finch_code":"finch_application_rl","message":"slow down"}`)(w, r)
	}
}

func TestExchangeCodeRetriesOn429WithRetryAfterMs(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /auth/token": sequence(rateLimited("150"), jsonHandler(200, tokenJSON)),
	}}
	c := newTestClient(t, rc, nil)
	start := time.Now()
	tok, err := c.ExchangeCode(context.Background(), TokenRequest{Code: "abc"})
	if err != nil || tok.ConnectionID != "conn-1" {
		t.Fatalf("tok %v err %v", tok, err)
	}
	if n := len(rc.requests()); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("took %v, want about 150ms (retry-after-ms, not backoff)", d)
	}
}

func TestExchangeCodeNotRetriedOn5xx(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{"POST /auth/token": jsonHandler(502, `bad gateway`)}}
	c := newTestClient(t, rc, nil)
	if _, err := c.ExchangeCode(context.Background(), TokenRequest{Code: "abc"}); Classify(err) != ClassTransient {
		t.Fatalf("err %v", err)
	}
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestRetryAfterBeyondMaxRetryWait(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"GET /introspect": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "120")
			rateLimited("")(w, r)
		},
	}}
	c := newTestClient(t, rc, nil)
	start := time.Now()
	_, err := c.Introspect(context.Background(), testToken)
	ra, ok := RateLimited(err)
	if !ok || ra != 120*time.Second || Classify(err) != ClassRateLimited {
		t.Fatalf("RateLimited(%v) = %v, %v", err, ra, ok)
	}
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("returned after %v, want immediately", d)
	}
}

func TestXShouldRetryFalse(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"GET /introspect": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Should-Retry", "false")
			jsonHandler(500, `{}`)(w, r)
		},
	}}
	c := newTestClient(t, rc, nil)
	if _, err := c.Introspect(context.Background(), testToken); err == nil {
		t.Fatal("no error")
	}
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestContextCancelDuringBackoff(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{"GET /introspect": jsonHandler(500, `{}`)}}
	c := newTestClient(t, rc, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Introspect(ctx, testToken)
	if !errors.Is(err, context.DeadlineExceeded) || Classify(err) != ClassTransient {
		t.Fatalf("err = %v", err)
	}
	var fe *Error
	if !errors.As(err, &fe) || fe.StatusCode != 500 {
		t.Errorf("the last *Error is not kept: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("cancel took %v", d)
	}
}

// TestBackoff: the SDKs' delay, 0.5s·2^n capped at 8s, shortened by up to
// 25% and never lengthened (finch-api-node src/client.ts
// calculateDefaultRetryTimeoutMillis; finch-api-go
// internal/requestconfig/requestconfig.go retryDelay).
func TestBackoff(t *testing.T) {
	for n, base := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second} {
		shortened := false
		for range 200 {
			d := backoff(n)
			if d < base*3/4 || d > base {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]: shortened by up to 25%%, never lengthened", n, d, base*3/4, base)
			}
			shortened = shortened || d < base*15/16
		}
		if !shortened {
			t.Errorf("backoff(%d): 200 delays, none shortened by more than 1/16: no jitter", n)
		}
	}
	if d := backoff(1000); d > 8*time.Second {
		t.Fatalf("backoff(1000) = %v", d)
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		h    http.Header
		want time.Duration
	}{
		{http.Header{}, 0},
		{http.Header{"Retry-After-Ms": {"250"}}, 250 * time.Millisecond},
		{http.Header{"Retry-After-Ms": {"garbage"}, "Retry-After": {"2"}}, 2 * time.Second},
		{http.Header{"Retry-After": {"-5"}}, 0},
		{http.Header{"Retry-After": {"1e300"}}, maxRetryAfter},
		{http.Header{"Retry-After": {"NaN"}}, 0},
		{http.Header{"Retry-After": {now.Add(-time.Minute).Format(http.TimeFormat)}}, 0},
		{http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, 90 * time.Second},
		{http.Header{"Retry-After": {"Someday"}}, 0},
	} {
		if got := retryAfter(tc.h, now); got != tc.want {
			t.Errorf("retryAfter(%v) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

func TestContextCancelWhileWaitingForBudgetKeepsLastError(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"GET /introspect": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After-Ms", "1")
			jsonHandler(500, `{}`)(w, r)
		},
	}}
	c := newTestClient(t, rc, func(c *Config) {
		c.Limiter = budget.Gate{Budget: budget.New(budget.Config{Requests: 1, Window: time.Hour})}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err := c.Introspect(ctx, testToken)
	var fe *Error
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &fe) || fe.StatusCode != 500 {
		t.Fatalf("err = %v", err)
	}
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}
