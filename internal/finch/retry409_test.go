package finch

import (
	"context"
	"net/http"
	"testing"
)

// Both SDKs retry 409 (finch-api-go internal/requestconfig/requestconfig.go
// shouldRetry; finch-api-node src/client.ts shouldRetry, "lock timeouts").
func TestConflictRetriedUnderRetryAll(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"GET /introspect":                       sequence(jsonHandler(409, `{}`), jsonHandler(200, `{"connection_id":"c"}`)),
		"POST /connect/sessions/reauthenticate": sequence(jsonHandler(409, `{}`), jsonHandler(201, sessionOK)),
	}}
	c := newTestClient(t, rc, nil)
	if in, err := c.Introspect(context.Background(), testToken); err != nil || in.ConnectionID != "c" {
		t.Fatalf("Introspect after a 409: %v", err)
	}
	if n := len(rc.requests()); n != 2 {
		t.Fatalf("%d requests, want 2 (409 retried)", n)
	}
	// Reauthenticate mints a session per call: only 429 is retried.
	_, err := c.Reauthenticate(context.Background(), ReauthRequest{ConnectionID: "conn-1"})
	if err == nil || Classify(err) != ClassTransient {
		t.Fatalf("Reauthenticate 409: err %v class %v, want a transient error", err, Classify(err))
	}
	if n := len(rc.requests()); n != 3 {
		t.Fatalf("%d requests, want 3 (Reauthenticate's 409 not retried)", n)
	}
}

func TestXShouldRetryTrue(t *testing.T) {
	forced := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Should-Retry", "true")
			jsonHandler(status, `{"name":"bad_request"}`)(w, r)
		}
	}
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /connect/sessions":                sequence(forced(400), jsonHandler(201, sessionOK)),
		"POST /connect/sessions/reauthenticate": sequence(forced(500), jsonHandler(201, sessionOK)),
		"GET /introspect": sequence(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Should-Retry", "true")
			w.Header().Set("Retry-After-Ms", "10")
			jsonHandler(429, `{"name":"rate_limit_exceeded_error","finch_code":"finch_api_ip_rl"}`)(w, r)
		}, jsonHandler(200, `{}`)),
	}}
	c := newTestClient(t, rc, nil)
	if _, err := c.CreateSession(context.Background(), sessionReq); err != nil {
		t.Fatalf("CreateSession: a 400 marked x-should-retry: true was not retried: %v", err)
	}
	if n := len(rc.requests()); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	// The policy of a non-idempotent call wins over the header.
	if _, err := c.Reauthenticate(context.Background(), ReauthRequest{ConnectionID: "conn-1"}); err == nil {
		t.Fatal("Reauthenticate retried a 500 because of x-should-retry: true")
	}
	if n := len(rc.requests()); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
	// The per-IP penalty is never retried in-process, whatever the header.
	_, err := c.Introspect(context.Background(), testToken)
	if !IsIPRateLimited(err) {
		t.Fatalf("Introspect: err = %v, want the per-IP 429", err)
	}
	if n := len(rc.requests()); n != 4 {
		t.Fatalf("%d requests, want 4 (finch_api_ip_rl not retried)", n)
	}
}

func TestSessionConnectURLFallback(t *testing.T) {
	for _, tc := range []struct {
		name, body, base string
		want, source     string
	}{
		{"connect_url", sessionOK, "", "https://connect.tryfinch.com/authorize?session=sess-1", ConnectURLFromBody},
		{"url only", `{"session_id":"sess-1","url":"https://connect.example/x?session=sess-1"}`, "",
			"https://connect.example/x?session=sess-1", ConnectURLFromURLField},
		{"empty connect_url, url", `{"session_id":"sess-1","connect_url":"","url":"https://connect.example/u"}`, "",
			"https://connect.example/u", ConnectURLFromURLField},
		{"neither", `{"session_id":"s 1&x"}`, "", "https://connect.tryfinch.com/authorize?session=s+1%26x", ConnectURLBuilt},
		{"neither, own connect host", `{"session_id":"sess-1","connect_url":null}`, "http://127.0.0.1:9/",
			"http://127.0.0.1:9/authorize?session=sess-1", ConnectURLBuilt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recorder{routes: map[string]http.HandlerFunc{
				"POST /connect/sessions":                jsonHandler(201, tc.body),
				"POST /connect/sessions/reauthenticate": jsonHandler(201, tc.body),
			}}
			c := newTestClient(t, rc, func(cfg *Config) { cfg.ConnectBaseURL = tc.base })
			re, err := c.Reauthenticate(context.Background(), ReauthRequest{ConnectionID: "conn-1"})
			if err != nil {
				t.Fatal(err)
			}
			cs, err := c.CreateSession(context.Background(), sessionReq)
			if err != nil {
				t.Fatal(err)
			}
			for what, s := range map[string]*SessionResponse{"Reauthenticate": re, "CreateSession": cs} {
				if s.ConnectURL != tc.want || s.ConnectURLSource != tc.source {
					t.Errorf("%s: connect URL %q (from %s), want %q (from %s)", what, s.ConnectURL, s.ConnectURLSource, tc.want, tc.source)
				}
			}
		})
	}
	if _, err := New(Config{ConnectBaseURL: "connect.tryfinch.com"}); err == nil {
		t.Error("New accepted a relative ConnectBaseURL")
	}
}

func TestIsUnauthorized(t *testing.T) {
	for _, tc := range []struct {
		status             int
		body               string
		unauthorized, tokn bool
	}{
		{401, `{"code":401,"name":"invalid_token_error","message":"revoked"}`, true, true},
		{401, `{"statusCode":401,"error":"Unauthorized","message":"jwt expired"}`, true, false},
		{401, `<html><body>401 Authorization Required</body></html>`, true, false},
		{401, ``, true, false},
		{403, `{"name":"insufficient_scope_error"}`, false, false},
		{400, `{"name":"invalid_grant_error"}`, false, false},
	} {
		rc := &recorder{routes: map[string]http.HandlerFunc{"POST /disconnect": jsonHandler(tc.status, tc.body)}}
		c := newTestClient(t, rc, nil)
		err := c.Disconnect(context.Background(), testToken)
		if IsUnauthorized(err) != tc.unauthorized || IsInvalidToken(err) != tc.tokn {
			t.Errorf("%d %s: IsUnauthorized %v IsInvalidToken %v, want %v %v", tc.status, tc.body,
				IsUnauthorized(err), IsInvalidToken(err), tc.unauthorized, tc.tokn)
		}
		if n := len(rc.requests()); n != 1 {
			t.Errorf("%d %s: %d requests, want 1 (a 4xx is not retried)", tc.status, tc.body, n)
		}
	}
	if IsUnauthorized(nil) || IsUnauthorized(context.Canceled) {
		t.Error("IsUnauthorized is true for a non-Finch error")
	}
}
