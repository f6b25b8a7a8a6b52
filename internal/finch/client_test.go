package finch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/connectops/finch-operator/internal/budget"
)

const (
	testClientID     = "client-id-123"
	testClientSecret = "client-secret-s3cr3t-value"
	testToken        = "access-token-t0ken-value"
)

// recorded is one request as the test server saw it.
type recorded struct {
	Method string
	Path   string
	Header http.Header
	Body   map[string]any
	Raw    string
}

// recorder is an httptest handler that records requests and answers with a
// per-path handler (default 200 "{}").
type recorder struct {
	mu     sync.Mutex
	reqs   []recorded
	routes map[string]http.HandlerFunc
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	rec := recorded{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Raw: string(raw)}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &rec.Body)
	}
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, rec)
	h := rc.routes[r.Method+" "+r.URL.Path]
	rc.mu.Unlock()
	if h == nil {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
		return
	}
	h(w, r)
}

func (rc *recorder) requests() []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]recorded(nil), rc.reqs...)
}

func jsonHandler(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// sequence answers with the handlers in order, repeating the last one.
func sequence(hs ...http.HandlerFunc) http.HandlerFunc {
	var n atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		hs[min(i, len(hs)-1)](w, r)
	}
}

func newTestClient(t testing.TB, rc *recorder, mutate func(*Config)) *Client {
	t.Helper()
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	cfg := Config{
		BaseURL:      srv.URL,
		ClientID:     testClientID,
		ClientSecret: testClientSecret,
		Limiter:      budget.Gate{Budget: budget.New(budget.Config{Requests: 1_000_000, Window: time.Minute})},
		MetricsApp:   types.NamespacedName{Namespace: "test", Name: "app"},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func ptr[T any](v T) *T { return &v }

func checkCommonHeaders(t *testing.T, r recorded, wantBody bool) {
	t.Helper()
	if got := r.Header.Get("Finch-API-Version"); got != "2020-09-17" {
		t.Errorf("Finch-API-Version = %q", got)
	}
	if got := r.Header.Get("Accept"); got != "application/json" {
		t.Errorf("Accept = %q", got)
	}
	if got := r.Header.Get("User-Agent"); got != "finch-connect-operator" {
		t.Errorf("User-Agent = %q", got)
	}
	if got := r.Header.Get("Content-Type"); wantBody && got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	} else if !wantBody && got != "" {
		t.Errorf("Content-Type = %q on a request without body", got)
	}
}

func TestCreateSessionWire(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /connect/sessions": jsonHandler(201, `{"session_id":"sess-1","connect_url":"https://connect.tryfinch.com/authorize?session=sess-1","extra":1}`),
	}}
	c := newTestClient(t, rc, nil)
	resp, err := c.CreateSession(context.Background(), SessionRequest{
		CustomerID:      "cust-1",
		CustomerName:    "Acme",
		CustomerEmail:   ptr("hr@acme.test"),
		Products:        []string{"company", "directory", "some_future_product"},
		Integration:     &Integration{Provider: "gusto", AuthMethod: ptr("oauth")},
		Manual:          ptr(false),
		MinutesToExpire: ptr(20160),
		RedirectURI:     ptr("https://op.example/callback/ns/app"),
		Sandbox:         ptr("finch"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SessionID != "sess-1" || !strings.Contains(resp.ConnectURL, "session=sess-1") {
		t.Fatalf("response = %+v", resp)
	}
	reqs := rc.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.Method != "POST" || r.Path != "/connect/sessions" {
		t.Fatalf("%s %s", r.Method, r.Path)
	}
	checkCommonHeaders(t, r, true)
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte(testClientID+":"+testClientSecret))
	if got := r.Header.Get("Authorization"); got != wantAuth {
		t.Errorf("Authorization = %q, want %q", got, wantAuth)
	}
	want := map[string]any{
		"customer_id":       "cust-1",
		"customer_name":     "Acme",
		"customer_email":    "hr@acme.test",
		"products":          []any{"company", "directory", "some_future_product"},
		"integration":       map[string]any{"provider": "gusto", "auth_method": "oauth"},
		"manual":            false,
		"minutes_to_expire": float64(20160),
		"redirect_uri":      "https://op.example/callback/ns/app",
		"sandbox":           "finch",
	}
	assertJSONEqual(t, r.Body, want)
}

func TestCreateSessionOmitsEmptyOptionals(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /connect/sessions": jsonHandler(201, `{"session_id":"s","connect_url":"u"}`),
	}}
	c := newTestClient(t, rc, nil)
	_, err := c.CreateSession(context.Background(), SessionRequest{
		CustomerID: "cust-1", CustomerName: "Acme", Products: []string{"company"},
		RedirectURI: ptr(""), Integration: &Integration{Provider: "adp_run", AuthMethod: ptr("")},
	})
	if err != nil {
		t.Fatal(err)
	}
	assertJSONEqual(t, rc.requests()[0].Body, map[string]any{
		"customer_id": "cust-1", "customer_name": "Acme", "products": []any{"company"},
		"integration": map[string]any{"provider": "adp_run"},
	})
}

func TestCreateSessionValidation(t *testing.T) {
	rc := &recorder{}
	c := newTestClient(t, rc, nil)
	_, err := c.CreateSession(context.Background(), SessionRequest{CustomerID: "x", CustomerName: "y"})
	if !errors.Is(err, ErrInvalidArgument) || Classify(err) != ClassTerminal {
		t.Fatalf("err = %v, class %v", err, Classify(err))
	}
	noCreds := newTestClient(t, rc, func(c *Config) { c.ClientSecret = "" })
	_, err = noCreds.CreateSession(context.Background(), SessionRequest{CustomerID: "x", CustomerName: "y", Products: []string{"company"}})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("err = %v", err)
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("%d requests sent for invalid calls", n)
	}
}

func TestReauthenticateWire(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /connect/sessions/reauthenticate": jsonHandler(201, `{"session_id":"re-1","connect_url":"https://connect.tryfinch.com/authorize?session=re-1"}`),
	}}
	c := newTestClient(t, rc, nil)
	resp, err := c.Reauthenticate(context.Background(), ReauthRequest{
		ConnectionID: "conn-1", MinutesToExpire: ptr(600), Products: []string{"company"}, RedirectURI: ptr("https://cb"),
	})
	if err != nil || resp.SessionID != "re-1" {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	r := rc.requests()[0]
	if r.Method != "POST" || r.Path != "/connect/sessions/reauthenticate" {
		t.Fatalf("%s %s", r.Method, r.Path)
	}
	checkCommonHeaders(t, r, true)
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Basic ") {
		t.Errorf("Authorization = %q, want Basic", r.Header.Get("Authorization"))
	}
	assertJSONEqual(t, r.Body, map[string]any{
		"connection_id": "conn-1", "minutes_to_expire": float64(600), "products": []any{"company"}, "redirect_uri": "https://cb",
	})

	// Only connection_id when nothing else is set.
	if _, err := c.Reauthenticate(context.Background(), ReauthRequest{ConnectionID: "conn-2"}); err != nil {
		t.Fatal(err)
	}
	assertJSONEqual(t, rc.requests()[1].Body, map[string]any{"connection_id": "conn-2"})
}

const tokenJSON = `{"access_token":"` + testToken + `","token_type":"bearer","connection_id":"conn-1",
"client_type":"sandbox","connection_type":"finch","entity_ids":["e-1"],"products":["company","new_product"],
"provider_id":"gusto","account_id":"acc-1","company_id":"co-1","customer_id":"cust-1","customer_name":null,"future_field":{"x":1}}`

func TestExchangeCodeWire(t *testing.T) {
	for _, tc := range []struct {
		name        string
		redirectURI string
	}{
		{"redirect flow", "https://op.example/callback/ns/app"},
		{"embedded flow", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recorder{routes: map[string]http.HandlerFunc{"POST /auth/token": jsonHandler(200, tokenJSON)}}
			c := newTestClient(t, rc, nil)
			tok, err := c.ExchangeCode(context.Background(), TokenRequest{Code: "code-abc", RedirectURI: tc.redirectURI})
			if err != nil {
				t.Fatal(err)
			}
			want := TokenResponse{
				AccessToken: testToken, TokenType: "bearer", ConnectionID: "conn-1", ClientType: "sandbox",
				ConnectionType: "finch", ProviderID: "gusto", EntityIDs: []string{"e-1"},
				Products: []string{"company", "new_product"}, AccountID: "acc-1", CompanyID: "co-1", CustomerID: "cust-1",
			}
			gotJSON, _ := json.Marshal(tok)
			wantJSON, _ := json.Marshal(want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("token = %s\nwant   %s", gotJSON, wantJSON)
			}
			if strings.Contains(tok.String(), testToken) || strings.Contains(fmtV(tok), testToken) {
				t.Error("TokenResponse String leaks the access token")
			}
			r := rc.requests()[0]
			if r.Method != "POST" || r.Path != "/auth/token" {
				t.Fatalf("%s %s", r.Method, r.Path)
			}
			checkCommonHeaders(t, r, true)
			if got := r.Header.Get("Authorization"); got != "" {
				t.Errorf("Authorization = %q, want none", got)
			}
			want2 := map[string]any{"client_id": testClientID, "client_secret": testClientSecret, "code": "code-abc"}
			if tc.redirectURI != "" {
				want2["redirect_uri"] = tc.redirectURI
			}
			assertJSONEqual(t, r.Body, want2)
			if tc.redirectURI == "" && strings.Contains(r.Raw, "redirect_uri") {
				t.Errorf("embedded exchange sent redirect_uri: %s", r.Raw)
			}
		})
	}
}

func TestIntrospectWire(t *testing.T) {
	body := `{"id":"tok-1","client_id":"cid","client_type":"production","connection_id":"conn-1","connection_type":"provider",
	"connection_status":{"status":"brand_new_status","message":"hello","last_successful_sync":"2025-06-01T10:00:00.000Z"},
	"products":["company"],"provider_id":"gusto","account_id":"acc","company_id":"co","customer_id":"cust","customer_name":"Acme",
	"customer_email":null,"username":"u@x","payroll_provider_id":"gusto","manual":true,
	"authentication_methods":[{"type":"assisted","connection_status":{"status":"pending","message":"waiting"}},
	  {"type":"credential","connection_status":{"status":"connected","last_successful_sync":"not a date"},"products":["directory"]},
	  {"type":"api_token","connection_status":null}],
	"entities":[{"id":"e","name":null,"source_id":null,"status":"disconnected"}]}`
	rc := &recorder{routes: map[string]http.HandlerFunc{"GET /introspect": jsonHandler(200, body)}}
	c := newTestClient(t, rc, nil)
	in, err := c.Introspect(context.Background(), testToken)
	if err != nil {
		t.Fatal(err)
	}
	if in.ConnectionID != "conn-1" || in.ConnectionStatus.Status != "brand_new_status" || in.ConnectionStatus.Message != "hello" ||
		in.ProviderID != "gusto" || !in.Manual || in.PayrollProviderID != "gusto" || in.Username != "u@x" || in.ID != "tok-1" {
		t.Fatalf("introspection = %+v", in)
	}
	if ls := in.ConnectionStatus.LastSuccessfulSync; ls == nil || !ls.Equal(time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("last_successful_sync = %v", ls)
	}
	if len(in.AuthenticationMethods) != 3 || in.AuthenticationMethods[1].ConnectionStatus.Status != "connected" ||
		in.AuthenticationMethods[1].ConnectionStatus.LastSuccessfulSync != nil || in.AuthenticationMethods[2].ConnectionStatus != nil {
		t.Errorf("authentication_methods = %+v", in.AuthenticationMethods)
	}
	// "date-time or any string" (finch-api-node src/resources/account.ts): a string is kept, not dropped.
	if raw := in.AuthenticationMethods[1].ConnectionStatus.LastSuccessfulSyncRaw; raw != "not a date" {
		t.Errorf("last_successful_sync that is not a date-time = %q, want it verbatim", raw)
	}
	if in.ConnectionStatus.LastSuccessfulSyncRaw != "" || in.AuthenticationMethods[0].ConnectionStatus.LastSuccessfulSyncRaw != "" {
		t.Errorf("raw last_successful_sync set for a date-time or an absent value: %+v", in)
	}
	if len(in.Entities) != 1 || in.Entities[0] != (Entity{ID: "e", Status: StatusDisconnected}) {
		t.Errorf("entities = %+v, want one with null name/source_id decoded as empty", in.Entities)
	}
	if in.Status() != "brand_new_status" || in.StatusDerived() {
		t.Errorf("Status() = %q (derived %v), want the top-level status kept verbatim", in.Status(), in.StatusDerived())
	}
	r := rc.requests()[0]
	if r.Method != "GET" || r.Path != "/introspect" {
		t.Fatalf("%s %s", r.Method, r.Path)
	}
	checkCommonHeaders(t, r, false)
	if got := r.Header.Get("Authorization"); got != "Bearer "+testToken {
		t.Errorf("Authorization = %q", got)
	}
}

func TestIntrospectLenientTypes(t *testing.T) {
	// A field of an unexpected type must not lose the rest of the response.
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"GET /introspect": jsonHandler(200, `{"connection_id":"conn-1","manual":"yes","products":"company","connection_status":"reauth"}`),
	}}
	c := newTestClient(t, rc, nil)
	in, err := c.Introspect(context.Background(), testToken)
	if err != nil {
		t.Fatal(err)
	}
	if in.ConnectionID != "conn-1" || in.ConnectionStatus.Status != "reauth" {
		t.Fatalf("introspection = %+v", in)
	}
}

func TestDisconnectAndSandboxWire(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"POST /disconnect":                  jsonHandler(200, `{"status":"success"}`),
		"PUT /sandbox/connections/accounts": jsonHandler(200, `{"connection_id":"conn-1","provider_id":"gusto"}`),
	}}
	c := newTestClient(t, rc, nil)
	if err := c.Disconnect(context.Background(), testToken); err != nil {
		t.Fatal(err)
	}
	if err := c.SandboxUpdateAccount(context.Background(), testToken, StatusReauth); err != nil {
		t.Fatal(err)
	}
	reqs := rc.requests()
	d, s := reqs[0], reqs[1]
	if d.Method != "POST" || d.Path != "/disconnect" || d.Raw != "" {
		t.Errorf("disconnect: %s %s body %q", d.Method, d.Path, d.Raw)
	}
	checkCommonHeaders(t, d, false)
	if s.Method != "PUT" || s.Path != "/sandbox/connections/accounts" {
		t.Errorf("sandbox: %s %s", s.Method, s.Path)
	}
	checkCommonHeaders(t, s, true)
	assertJSONEqual(t, s.Body, map[string]any{"connection_status": "reauth"})
	for _, r := range reqs {
		if got := r.Header.Get("Authorization"); got != "Bearer "+testToken {
			t.Errorf("%s: Authorization = %q", r.Path, got)
		}
	}
}

func TestBaseURLPathPrefixAndVersion(t *testing.T) {
	rc := &recorder{}
	c := newTestClient(t, rc, func(c *Config) { c.BaseURL += "/finch/"; c.APIVersion = "2099-01-01" })
	_ = c.Disconnect(context.Background(), testToken)
	r := rc.requests()[0]
	if r.Path != "/finch/disconnect" || r.Header.Get("Finch-API-Version") != "2099-01-01" {
		t.Fatalf("path %q version %q", r.Path, r.Header.Get("Finch-API-Version"))
	}
}

func TestNewValidation(t *testing.T) {
	for _, u := range []string{"ftp://x", "http://", "://bad", "https://user:pw@api.tryfinch.com", "https://x/?a=b", "api.tryfinch.com"} {
		if _, err := New(Config{BaseURL: u}); err == nil {
			t.Errorf("New(%q) accepted", u)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("New(%q) error leaks the password: %v", u, err)
		}
	}
	c, err := New(Config{ClientSecret: "very-secret"})
	if err != nil {
		t.Fatal(err)
	}
	if c.baseURL != DefaultBaseURL || c.maxAttempts != 3 || c.maxRetryWait != 10*time.Second || c.timeout != 30*time.Second ||
		c.apiVersion != DefaultAPIVersion || c.limiter == nil {
		t.Errorf("defaults not applied: %+v", *c)
	}
	if strings.Contains(fmtV(c), "very-secret") || strings.Contains(fmtV(Config{ClientSecret: "very-secret"}), "very-secret") {
		t.Error("String leaks the client secret")
	}
}

func TestPerAttemptTimeout(t *testing.T) {
	var calls atomic.Int32
	rc := &recorder{routes: map[string]http.HandlerFunc{
		"GET /introspect": func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				select { // hang until the client gives up on this attempt
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
				return
			}
			jsonHandler(200, `{"connection_id":"conn-1"}`)(w, r)
		},
	}}
	c := newTestClient(t, rc, func(c *Config) { c.Timeout = 100 * time.Millisecond })
	in, err := c.Introspect(context.Background(), testToken)
	if err != nil || in.ConnectionID != "conn-1" || calls.Load() != 2 {
		t.Fatalf("in %+v err %v calls %d", in, err, calls.Load())
	}
}

func assertJSONEqual(t *testing.T, got, want map[string]any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("body = %s\nwant   %s", g, w)
	}
}
