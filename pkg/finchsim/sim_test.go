package finchsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAuthFailures(t *testing.T) {
	e := newEnv(t)
	body := sessionBody("c1", nil)

	r := e.do("POST", "/connect/sessions", body)
	expectError(t, r, 401, "invalid_client_error", "")
	if r.header.Get("Finch-Request-Id") == "" {
		t.Error("missing Finch-Request-Id")
	}
	expectError(t, e.do("POST", "/connect/sessions", body, withBasic(testClientID, "wrong")), 401, "invalid_client_error", "")
	expectError(t, e.do("POST", "/connect/sessions", body, withBasic("nobody", testSecret)), 401, "invalid_client_error", "")
	expectError(t, e.do("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": "x"}, withBasic(testClientID, "wrong")), 401, "invalid_client_error", "")

	// /auth/token: credentials in the body.
	expectError(t, e.do("POST", "/auth/token", map[string]any{"client_id": testClientID, "client_secret": "nope", "code": "c"}), 401, "invalid_client_error", "")
	expectError(t, e.do("POST", "/auth/token", map[string]any{"code": "c"}), 401, "invalid_client_error", "")

	// Bearer endpoints.
	expectError(t, e.do("GET", "/introspect", nil), 401, "unauthorized_request_error", "")
	expectError(t, e.do("GET", "/introspect", nil, withBearer("bogus")), 401, "invalid_token_error", "")
	expectError(t, e.do("POST", "/disconnect", nil, withBearer("bogus")), 401, "invalid_token_error", "")
	expectError(t, e.do("PUT", "/sandbox/connections/accounts", map[string]any{"connection_status": "reauth"}, withBearer("bogus")), 401, "invalid_token_error", "")

	// Finch-API-Version is required.
	m := expectError(t, e.basic("POST", "/connect/sessions", body, withoutVersion()), 400, "bad_request", "invalid_request")
	if !strings.Contains(m["message"].(string), "Finch-API-Version") {
		t.Errorf("message should name the header: %v", m["message"])
	}
	_, _, tok := e.connect("c-ok")
	expectError(t, e.do("GET", "/introspect", nil, withBearer(tok), withoutVersion()), 400, "bad_request", "invalid_request")

	// A Basic token sent for /auth/token is tolerated when the body has no credentials.
	sid, _ := e.createSession("c-basic", nil)
	code, _ := e.sim.CompleteSession(sid, Completion{})
	if r := e.do("POST", "/auth/token", map[string]any{"code": code}, withBasic(testClientID, testSecret)); r.status != 200 {
		t.Errorf("token with Basic creds: %d %s", r.status, r.body)
	}

	// Unknown routes are Finch-style 404s.
	expectError(t, e.do("GET", "/connect/sessions", nil), 404, "not_found_error", "")
}

func TestSessionValidation(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("x", 256)
	cases := []struct {
		name  string
		body  any
		field string
	}{
		{"empty body", "", "body"},
		{"not json", "{", "JSON"},
		{"missing customer_id", map[string]any{"customer_name": "n", "products": []string{"company"}}, "customer_id"},
		{"empty customer_id", sessionBody("", nil), "customer_id"},
		{"long customer_id", sessionBody(long, nil), "customer_id"},
		{"wrong type customer_id", map[string]any{"customer_id": 5, "customer_name": "n", "products": []string{"company"}}, "customer_id"},
		{"missing customer_name", map[string]any{"customer_id": "c", "products": []string{"company"}}, "customer_name"},
		{"long customer_name", sessionBody("c", map[string]any{"customer_name": long}), "customer_name"},
		{"missing products", map[string]any{"customer_id": "c", "customer_name": "n"}, "products"},
		{"empty products", sessionBody("c", map[string]any{"products": []string{}}), "products"},
		{"unknown product", sessionBody("c", map[string]any{"products": []string{"company", "payroll"}}), "products"},
		{"minutes zero", sessionBody("c", map[string]any{"minutes_to_expire": 0}), "minutes_to_expire"},
		{"minutes too big", sessionBody("c", map[string]any{"minutes_to_expire": 129601}), "minutes_to_expire"},
		{"bad sandbox", sessionBody("c", map[string]any{"sandbox": "yes"}), "sandbox"},
		{"bad auth_method", sessionBody("c", map[string]any{"integration": map[string]any{"provider": "gusto", "auth_method": "password"}}), "auth_method"},
		{"integration without provider", sessionBody("c", map[string]any{"integration": map[string]any{"auth_method": "oauth"}}), "integration.provider"},
		{"bad redirect_uri", sessionBody("c", map[string]any{"redirect_uri": "not a url"}), "redirect_uri"},
		{"bad email", sessionBody("c", map[string]any{"customer_email": "nope"}), "customer_email"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := expectError(t, e.basic("POST", "/connect/sessions", tc.body), 400, "bad_request", "invalid_request")
			if msg, _ := m["message"].(string); !strings.Contains(msg, tc.field) {
				t.Errorf("message %q does not name %q", msg, tc.field)
			}
		})
	}
	if n := len(e.sim.Sessions()); n != 0 {
		t.Fatalf("invalid requests created %d sessions", n)
	}

	// Valid edge values.
	ok := sessionBody(strings.Repeat("y", 255), map[string]any{
		"customer_name": strings.Repeat("n", 255), "minutes_to_expire": 129600, "sandbox": "finch", "manual": true, "customer_email": "hr@acme.example",
		"integration": map[string]any{"provider": "adp_run", "auth_method": "credential"},
		"products":    KnownProducts, "redirect_uri": "https://app.example/cb",
	})
	if r := e.basic("POST", "/connect/sessions", ok); r.status != 201 {
		t.Fatalf("valid request: %d %s", r.status, r.body)
	}
	// The migration guide's example sends sandbox: false.
	if r := e.basic("POST", "/connect/sessions", sessionBody("c-false", map[string]any{"sandbox": false, "minutes_to_expire": 1})); r.status != 201 {
		t.Fatalf("sandbox false: %d %s", r.status, r.body)
	}

	// Reauthenticate validation.
	expectError(t, e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{}), 400, "bad_request", "invalid_request")
	expectError(t, e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": "nope"}), 404, "bad_request", "connection_not_found")
}

func TestCreateSessionResponseAndDefaults(t *testing.T) {
	e := newEnv(t)
	r := e.basic("POST", "/connect/sessions", sessionBody("c1", nil))
	if r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	m := r.obj(t)
	if len(m) != 2 {
		t.Errorf("response should only have session_id and connect_url: %s", r.body)
	}
	id := m["session_id"].(string)
	if want := e.url + "/authorize?session=" + id; m["connect_url"] != want {
		t.Errorf("connect_url = %v, want %s", m["connect_url"], want)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	si, ok := e.sim.Session(id)
	if !ok || si.Kind != "connect" || si.ClientID != testClientID || si.CustomerID != "c1" {
		t.Fatalf("session info %+v", si)
	}
	if got := si.ExpiresAt.Sub(si.CreatedAt); got != 129600*time.Minute {
		t.Errorf("default expiry %v", got)
	}

	// ConnectBaseURL option.
	s2 := New(Options{ConnectBaseURL: "https://connect.example/"})
	s2.AddApp(AppConfig{ClientID: "a", ClientSecret: "b"})
	u := s2.Start()
	defer s2.Close()
	e2 := &env{t: t, sim: s2, url: u, hc: e.hc}
	r = e2.do("POST", "/connect/sessions", sessionBody("c1", nil), withBasic("a", "b"))
	if got := r.str(t, "connect_url"); !strings.HasPrefix(got, "https://connect.example/authorize?session=") {
		t.Errorf("connect_url %s", got)
	}
}

func TestSameCustomerRefreshesSameSession(t *testing.T) {
	e := newEnv(t)
	id1, url1 := e.createSession("acme", map[string]any{"minutes_to_expire": 60})
	e.clock.Advance(30 * time.Minute)
	id2, url2 := e.createSession("acme", map[string]any{"customer_name": "Acme Renamed", "minutes_to_expire": 120, "products": []string{"payment"}})
	if id1 != id2 || url1 != url2 {
		t.Fatalf("same customer_id gave a new session: %s vs %s", id1, id2)
	}
	si, _ := e.sim.Session(id1)
	if si.CustomerName != "Acme Renamed" || len(si.Products) != 1 || si.Products[0] != "payment" {
		t.Errorf("params not updated: %+v", si)
	}
	if want := e.clock.Now().Add(120 * time.Minute); !si.ExpiresAt.Equal(want) {
		t.Errorf("expiry not refreshed: %v want %v", si.ExpiresAt, want)
	}
	if si.Refreshes != 1 {
		t.Errorf("refreshes = %d", si.Refreshes)
	}

	// Let it expire: completing fails, but recreating re-arms the same id.
	e.clock.Advance(121 * time.Minute)
	if _, err := e.sim.CompleteSession(id1, Completion{}); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("complete expired: %v", err)
	}
	id3, _ := e.createSession("acme", nil)
	if id3 != id1 {
		t.Fatalf("expired session not re-armed: %s vs %s", id3, id1)
	}
	if _, err := e.sim.CompleteSession(id1, Completion{}); err != nil {
		t.Fatalf("complete re-armed: %v", err)
	}

	// Another customer, or another app, gets another session.
	other, _ := e.createSession("globex", nil)
	e.sim.AddApp(AppConfig{ClientID: "app-2", ClientSecret: "x"})
	r := e.do("POST", "/connect/sessions", sessionBody("acme", nil), withBasic("app-2", "x"))
	if r.status != 201 || other == id1 || r.str(t, "session_id") == id1 {
		t.Fatalf("distinct customers/apps must not share sessions: %d %s", r.status, r.body)
	}
	if n := len(e.sim.Sessions()); n != 3 {
		t.Errorf("sessions = %d, want 3", n)
	}
}

func TestConcurrentSameCustomerOneSession(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	ids := make([]string, 20)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.send("POST", "/connect/sessions", sessionBody("same", nil), withBasic(testClientID, testSecret))
			if err == nil && r.status == 201 {
				var m map[string]string
				_ = json.Unmarshal(r.body, &m)
				ids[i] = m["session_id"]
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id == "" || id != ids[0] {
			t.Fatalf("ids differ or failed: %v", ids)
		}
	}
}

func TestConnectionAlreadyExists(t *testing.T) {
	e := newEnv(t)
	sid, _ := e.createSession("acme", nil)
	if _, err := e.sim.CompleteSession(sid, Completion{}); err != nil {
		t.Fatal(err)
	}
	conns := e.sim.Connections()
	if len(conns) != 1 {
		t.Fatalf("connections %v", conns)
	}
	r := e.basic("POST", "/connect/sessions", sessionBody("acme", nil))
	want := `{"code":400,"finch_code":"connection_already_exists","message":"There's an existing connection for the customer_id: acme. Please use the /connect/sessions/reauthenticate endpoint instead.","name":"bad_request","context":{"customer_id":"acme","connection_id":"` + conns[0].ID + `"}}`
	if r.status != 400 || strings.TrimSpace(string(r.body)) != want {
		t.Fatalf("got %d %s\nwant %s", r.status, r.body, want)
	}
	if _, err := e.sim.CompleteSession(sid, Completion{}); !errors.Is(err, ErrSessionCompleted) {
		t.Errorf("second completion: %v", err)
	}
}

func TestReauthSessionsAreNewEachCall(t *testing.T) {
	e := newEnv(t)
	_, connID, _ := e.connect("acme")
	var ids []string
	for i := 0; i < 2; i++ {
		r := e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": connID})
		if r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		id := r.str(t, "session_id")
		if r.str(t, "connect_url") != e.url+"/authorize?session="+id {
			t.Errorf("connect_url %s", r.body)
		}
		ids = append(ids, id)
		si, _ := e.sim.Session(id)
		if si.Kind != "reauthenticate" || si.ConnectionID != connID || si.CustomerID != "acme" {
			t.Errorf("reauth session %+v", si)
		}
		if d := si.ExpiresAt.Sub(si.CreatedAt); d != 43200*time.Minute {
			t.Errorf("reauth default expiry %v", d)
		}
	}
	if ids[0] == ids[1] {
		t.Fatal("reauthenticate returned the same session twice")
	}
	// Another app cannot reauthenticate this connection.
	e.sim.AddApp(AppConfig{ClientID: "app-2", ClientSecret: "x"})
	expectError(t, e.do("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": connID}, withBasic("app-2", "x")), 404, "bad_request", "connection_not_found")
	// Products are optional but validated.
	expectError(t, e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": connID, "products": []string{"nope"}}), 400, "bad_request", "invalid_request")
	if r := e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": connID, "products": []string{"payment"}, "minutes_to_expire": 5, "redirect_uri": "https://app.example/cb"}); r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestAuthorizeRedirectFlow(t *testing.T) {
	e := newEnv(t)
	redirect := "https://app.example/callback/ns/app?tenant=t1"
	_, connectURL := e.createSession("acme", map[string]any{"redirect_uri": redirect})
	r := e.do("GET", connectURL+"&state=xyz&provider=bamboo_hr&auth_method=oauth", nil)
	if r.status != http.StatusFound {
		t.Fatalf("authorize: %d %s", r.status, r.body)
	}
	loc := r.header.Get("Location")
	if !strings.HasPrefix(loc, redirect+"&") {
		t.Fatalf("Location %q does not keep the redirect_uri's query", loc)
	}
	q := queryOf(t, loc)
	code := q.Get("code")
	if code == "" || q.Get("state") != "xyz" || q.Get("tenant") != "t1" {
		t.Fatalf("Location %q", loc)
	}
	// Mismatched redirect_uri fails and does not burn the code.
	expectError(t, e.exchange(code, "https://evil.example/cb"), 400, "invalid_grant_error", "")
	tr := e.exchange(code, redirect)
	if tr.status != 200 {
		t.Fatalf("exchange: %d %s", tr.status, tr.body)
	}
	m := tr.obj(t)
	for _, k := range []string{"access_token", "token_type", "connection_id", "client_type", "connection_type", "entity_ids", "products", "provider_id", "account_id", "company_id", "customer_id", "customer_name"} {
		if _, ok := m[k]; !ok {
			t.Errorf("token response lacks %s: %s", k, tr.body)
		}
	}
	if m["token_type"] != "bearer" || m["client_type"] != "sandbox" || m["connection_type"] != "provider" ||
		m["provider_id"] != "bamboo_hr" || m["customer_id"] != "acme" || m["customer_name"] != "Customer acme" {
		t.Errorf("token response %s", tr.body)
	}
	ci, _ := e.sim.Connection(m["connection_id"].(string))
	if ci.AuthMethod != "oauth" || ci.Status != "connected" || ci.Tokens != 1 {
		t.Errorf("connection %+v", ci)
	}

	// Opening the link again: the session is completed.
	if r := e.do("GET", connectURL, nil); r.status != http.StatusConflict {
		t.Errorf("re-open: %d %s", r.status, r.body)
	}
	// Unknown session: 404 (HTML for browsers).
	r = e.do("GET", "/authorize?session=nope", nil, withHeader("Accept", "text/html"))
	if r.status != 404 || !strings.Contains(r.header.Get("Content-Type"), "text/html") {
		t.Errorf("unknown session: %d %s", r.status, r.header.Get("Content-Type"))
	}
	// Expired session: 410.
	_, u2 := e.createSession("late", map[string]any{"minutes_to_expire": 1, "redirect_uri": redirect})
	e.clock.Advance(time.Minute)
	if r := e.do("GET", u2, nil); r.status != http.StatusGone {
		t.Errorf("expired session: %d %s", r.status, r.body)
	}
}

func TestAuthorizeEmbeddedFlow(t *testing.T) {
	e := newEnv(t)
	_, connectURL := e.createSession("acme", map[string]any{"sandbox": "finch", "integration": map[string]any{"provider": "adp_run", "auth_method": "assisted"}})
	r := e.do("GET", connectURL+"&state=s1", nil)
	if r.status != 200 {
		t.Fatalf("authorize: %d %s", r.status, r.body)
	}
	code := r.str(t, "code")
	if code == "" || r.str(t, "state") != "s1" {
		t.Fatalf("embedded: %s", r.body)
	}
	// An embedded exchange must not send a redirect_uri.
	expectError(t, e.exchange(code, "https://app.example/cb"), 400, "invalid_grant_error", "")
	tr := e.exchange(code, "")
	if tr.status != 200 {
		t.Fatalf("%d %s", tr.status, tr.body)
	}
	m := tr.obj(t)
	if m["connection_type"] != "finch" || m["provider_id"] != "adp_run" {
		t.Errorf("integration/sandbox not honoured: %s", tr.body)
	}
	ci, _ := e.sim.Connection(m["connection_id"].(string))
	if ci.AuthMethod != "assisted" {
		t.Errorf("auth method %q", ci.AuthMethod)
	}

	// app_type=spa (the SDK iframe) gets JSON even when the session has a redirect_uri.
	_, u := e.createSession("b", map[string]any{"redirect_uri": "https://app.example/cb"})
	if r := e.do("GET", u+"&app_type=spa", nil); r.status != 200 || r.str(t, "code") == "" {
		t.Errorf("spa: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/authorize", nil); r.status != 400 {
		t.Errorf("missing session: %d", r.status)
	}
}

func TestCodeSingleUseAndExpiry(t *testing.T) {
	e := newEnv(t)
	sid, _ := e.createSession("a", nil)
	code, _ := e.sim.CompleteSession(sid, Completion{})
	if r := e.exchange(code, ""); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	expectError(t, e.exchange(code, ""), 400, "invalid_grant_error", "")
	expectError(t, e.exchange("not-a-code", ""), 400, "invalid_grant_error", "")

	// 10-minute lifetime.
	sid, _ = e.createSession("b", nil)
	code, _ = e.sim.CompleteSession(sid, Completion{})
	e.clock.Advance(10 * time.Minute)
	expectError(t, e.exchange(code, ""), 400, "invalid_grant_error", "")

	sid, _ = e.createSession("c", nil)
	code, _ = e.sim.CompleteSession(sid, Completion{})
	e.clock.Advance(10*time.Minute - time.Second)
	if r := e.exchange(code, ""); r.status != 200 {
		t.Fatalf("code within 10 minutes: %d %s", r.status, r.body)
	}

	// Bound to the app.
	e.sim.AddApp(AppConfig{ClientID: "app-2", ClientSecret: "x"})
	sid, _ = e.createSession("d", nil)
	code, _ = e.sim.CompleteSession(sid, Completion{})
	expectError(t, e.do("POST", "/auth/token", map[string]any{"client_id": "app-2", "client_secret": "x", "code": code}), 400, "invalid_grant_error", "")
	if r := e.exchange(code, ""); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestIntrospectAndStatus(t *testing.T) {
	e := newEnv(t)
	sid, _ := e.createSession("acme", map[string]any{"customer_email": "hr@acme.example"})
	code, _ := e.sim.CompleteSession(sid, Completion{Provider: "gusto", AuthMethod: "assisted", Status: "pending"})
	tr := e.exchange(code, "")
	tok, connID := tr.str(t, "access_token"), tr.str(t, "connection_id")
	r := e.introspect(tok)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var in struct {
		ID               string `json:"id"`
		ClientID         string `json:"client_id"`
		ClientType       string `json:"client_type"`
		ConnectionID     string `json:"connection_id"`
		ConnectionStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"connection_status"`
		ConnectionType    string   `json:"connection_type"`
		Products          []string `json:"products"`
		ProviderID        string   `json:"provider_id"`
		PayrollProviderID string   `json:"payroll_provider_id"`
		AccountID         string   `json:"account_id"`
		CompanyID         string   `json:"company_id"`
		CustomerID        string   `json:"customer_id"`
		CustomerName      string   `json:"customer_name"`
		CustomerEmail     string   `json:"customer_email"`
		Manual            *bool    `json:"manual"`
		Username          string   `json:"username"`
		AuthMethods       []struct {
			Type             string `json:"type"`
			ConnectionStatus struct {
				Status string `json:"status"`
			} `json:"connection_status"`
			Products []string `json:"products"`
		} `json:"authentication_methods"`
	}
	if err := json.Unmarshal(r.body, &in); err != nil {
		t.Fatal(err)
	}
	if in.ID == "" || in.ID == tok || in.ClientID != testClientID || in.ClientType != "sandbox" || in.ConnectionID != connID ||
		in.ConnectionStatus.Status != "pending" || in.ConnectionStatus.Message == "" || in.ConnectionType != "provider" ||
		len(in.Products) != 2 || in.ProviderID != "gusto" || in.PayrollProviderID != "gusto" || in.AccountID == "" ||
		in.CompanyID == "" || in.CustomerID != "acme" || in.CustomerName != "Customer acme" || in.CustomerEmail != "hr@acme.example" ||
		in.Manual == nil || in.Username == "" || len(in.AuthMethods) != 1 || in.AuthMethods[0].Type != "assisted" ||
		in.AuthMethods[0].ConnectionStatus.Status != "pending" {
		t.Errorf("introspect: %s", r.body)
	}

	// Sandbox PUT flips the status.
	r = e.do("PUT", "/sandbox/connections/accounts", map[string]any{"connection_status": "error_permissions"}, withBearer(tok))
	if r.status != 200 || r.str(t, "connection_id") != connID || r.str(t, "authentication_type") != "assisted" || r.str(t, "entity_id") == "" {
		t.Fatalf("sandbox put: %d %s", r.status, r.body)
	}
	if st := e.introspect(tok).obj(t)["connection_status"].(map[string]any)["status"]; st != "error_permissions" {
		t.Errorf("status after PUT %v", st)
	}
	expectError(t, e.do("PUT", "/sandbox/connections/accounts", map[string]any{"connection_status": "bogus"}, withBearer(tok)), 400, "bad_request", "invalid_request")
	if err := e.sim.SetConnectionStatus(connID, "connected"); err != nil {
		t.Fatal(err)
	}
	st := e.introspect(tok).obj(t)["connection_status"].(map[string]any)
	if st["status"] != "connected" || st["last_successful_sync"] == nil {
		t.Errorf("after SetConnectionStatus: %v", st)
	}
	if err := e.sim.SetConnectionStatus("nope", "reauth"); !errors.Is(err, ErrConnectionNotFound) {
		t.Errorf("unknown connection: %v", err)
	}
}

func TestReauthCompletionRevokesOldToken(t *testing.T) {
	e := newEnv(t)
	_, connID, tok1 := e.connect("acme")
	before, _ := e.sim.Connection(connID)
	if err := e.sim.SetConnectionStatus(connID, "reauth"); err != nil {
		t.Fatal(err)
	}
	if st := e.introspect(tok1).obj(t)["connection_status"].(map[string]any)["status"]; st != "reauth" {
		t.Fatalf("status %v", st)
	}
	r := e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": connID, "redirect_uri": "https://app.example/cb"})
	_, u := r.str(t, "session_id"), r.str(t, "connect_url")
	// The employer may not switch provider during reauth: it is locked to the connection's.
	loc := e.do("GET", u+"&provider=other&state=st", nil).header.Get("Location")
	code := queryOf(t, loc).Get("code")
	// Until the code is exchanged the old token still works.
	if r := e.introspect(tok1); r.status != 200 {
		t.Fatalf("old token before exchange: %d", r.status)
	}
	tr := e.exchange(code, "https://app.example/cb")
	if tr.status != 200 {
		t.Fatalf("%d %s", tr.status, tr.body)
	}
	tok2 := tr.str(t, "access_token")
	if tr.str(t, "connection_id") != connID || tok2 == tok1 {
		t.Fatalf("reauth exchange: %s", tr.body)
	}
	if tr.str(t, "provider_id") != before.ProviderID {
		t.Errorf("provider changed on reauth: %s", tr.body)
	}
	if tr.str(t, "account_id") == before.AccountID {
		t.Errorf("account_id should change on reauth")
	}
	expectError(t, e.introspect(tok1), 401, "invalid_token_error", "")
	in := e.introspect(tok2)
	if in.status != 200 || in.obj(t)["connection_status"].(map[string]any)["status"] != "connected" || in.str(t, "connection_id") != connID {
		t.Fatalf("new token: %d %s", in.status, in.body)
	}
	ci, _ := e.sim.Connection(connID)
	if ci.Tokens != 1 || len(e.sim.Connections()) != 1 {
		t.Errorf("connection %+v, connections %d", ci, len(e.sim.Connections()))
	}
}

func TestDisconnect(t *testing.T) {
	e := newEnv(t)
	sid, connID, tok := e.connect("acme")
	r := e.do("POST", "/disconnect", nil, withBearer(tok))
	if r.status != 200 || strings.TrimSpace(string(r.body)) != `{"status":"success"}` {
		t.Fatalf("disconnect: %d %s", r.status, r.body)
	}
	expectError(t, e.introspect(tok), 401, "invalid_token_error", "")
	expectError(t, e.do("POST", "/disconnect", nil, withBearer(tok)), 401, "invalid_token_error", "")
	ci, _ := e.sim.Connection(connID)
	if !ci.Disconnected || ci.Status != "disconnected" || ci.Tokens != 0 {
		t.Errorf("after disconnect %+v", ci)
	}
	// Cannot reauthenticate or revive it.
	expectError(t, e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": connID}), 400, "bad_request", "connection_disconnected")
	if err := e.sim.SetConnectionStatus(connID, "connected"); !errors.Is(err, ErrConnectionDisconnected) {
		t.Errorf("SetConnectionStatus on disconnected: %v", err)
	}
	// A new connect session for the same customer is allowed and yields a new connection.
	sid2, _ := e.createSession("acme", nil)
	if sid2 != sid {
		t.Logf("note: new session id after disconnect (%s != %s)", sid2, sid)
	}
	code, err := e.sim.CompleteSession(sid2, Completion{})
	if err != nil {
		t.Fatal(err)
	}
	tr := e.exchange(code, "")
	if tr.status != 200 || tr.str(t, "connection_id") == connID || tr.str(t, "connection_id") == "" {
		t.Fatalf("new connection: %s", tr.body)
	}
	if n := len(e.sim.Connections()); n != 2 {
		t.Errorf("connections %d", n)
	}

	// A code issued before disconnect cannot be exchanged afterwards.
	s3, _ := e.createSession("other", nil)
	c3, _ := e.sim.CompleteSession(s3, Completion{})
	tok3 := e.exchange(c3, "").str(t, "access_token")
	r4 := e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": e.introspect(tok3).str(t, "connection_id")})
	c4, _ := e.sim.CompleteSession(r4.str(t, "session_id"), Completion{})
	e.do("POST", "/disconnect", nil, withBearer(tok3))
	expectError(t, e.exchange(c4, ""), 400, "invalid_grant_error", "")
}

func TestWebhookSignatureAndRetry(t *testing.T) {
	const secret = "5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH"
	type delivery struct {
		h    http.Header
		body []byte
	}
	var mu sync.Mutex
	var got []delivery
	fails := 2
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, delivery{r.Header.Clone(), b})
		if fails > 0 {
			fails--
			w.WriteHeader(500)
			return
		}
		w.WriteHeader(200)
	}))
	defer recv.Close()

	e := newEnv(t)
	e.sim.AddApp(AppConfig{ClientID: testClientID, ClientSecret: testSecret, WebhookURL: recv.URL, WebhookSecret: secret})
	_, connID, tok := e.connect("acme")
	ci, _ := e.sim.Connection(connID)
	if err := e.sim.SetConnectionStatus(connID, "reauth"); err != nil {
		t.Fatal(err)
	}
	if !e.sim.WaitWebhooks(10 * time.Second) {
		t.Fatal("webhook still in flight")
	}
	mu.Lock()
	if len(got) != 3 {
		t.Fatalf("attempts = %d, want 3 (two 500s then 200)", len(got))
	}
	id := got[0].h.Get("Finch-Event-Id")
	if !strings.HasPrefix(id, "msg_") {
		t.Errorf("event id %q", id)
	}
	for i, d := range got {
		if d.h.Get("Finch-Event-Id") != id {
			t.Errorf("attempt %d has a different event id", i)
		}
		if err := verifyFinchSignature(secret, d.h, d.body, e.clock.Now()); err != nil {
			t.Errorf("attempt %d: %v", i, err)
		}
		if err := verifyFinchSignature("b3RoZXJzZWNyZXQ=", d.h, d.body, e.clock.Now()); err == nil {
			t.Errorf("attempt %d verified with the wrong secret", i)
		}
		if !strings.HasPrefix(d.h.Get("Content-Type"), "application/json") {
			t.Errorf("content type %q", d.h.Get("Content-Type"))
		}
	}
	want := fmt.Sprintf(`{"account_id":%q,"company_id":%q,"connection_id":%q,"event_type":"account.updated","data":{"status":"reauth","authentication_method":{"type":"credential"}}}`,
		ci.AccountID, ci.CompanyID, connID)
	if string(got[0].body) != want {
		t.Errorf("body\n%s\nwant\n%s", got[0].body, want)
	}
	got = nil
	mu.Unlock()
	if e.sim.WebhookDeliveries() != 1 || e.sim.WebhookAttempts() != 3 || e.sim.WebhookFailures() != 0 {
		t.Errorf("deliveries %d attempts %d failures %d", e.sim.WebhookDeliveries(), e.sim.WebhookAttempts(), e.sim.WebhookFailures())
	}

	// The sandbox PUT also fires one, with a new event id.
	if r := e.do("PUT", "/sandbox/connections/accounts", map[string]any{"connection_status": "connected"}, withBearer(tok)); r.status != 200 {
		t.Fatal(r.status)
	}
	e.sim.WaitWebhooks(10 * time.Second)
	mu.Lock()
	if len(got) != 1 || got[0].h.Get("Finch-Event-Id") == id || !strings.Contains(string(got[0].body), `"status":"connected"`) {
		t.Errorf("sandbox webhook: %d deliveries", len(got))
	}
	mu.Unlock()
	if e.sim.WebhookDeliveries() != 2 {
		t.Errorf("deliveries %d", e.sim.WebhookDeliveries())
	}

	// No webhook URL: nothing is sent.
	e.sim.SetWebhookURL(testClientID, "")
	_ = e.sim.SetConnectionStatus(connID, "reauth")
	e.sim.WaitWebhooks(time.Second)
	if e.sim.WebhookAttempts() != 4 {
		t.Errorf("attempts %d, want 4", e.sim.WebhookAttempts())
	}
}

func TestWebhookGivesUp(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~2.6s")
	}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer recv.Close()
	e := newEnv(t)
	e.sim.AddApp(AppConfig{ClientID: testClientID, ClientSecret: testSecret, WebhookURL: recv.URL, WebhookSecret: "c2VjcmV0"})
	_, connID, _ := e.connect("acme")
	start := time.Now()
	_ = e.sim.SetConnectionStatus(connID, "reauth")
	e.sim.WaitWebhooks(10 * time.Second)
	if e.sim.WebhookAttempts() != len(webhookRetryDelays) || e.sim.WebhookFailures() != 1 || e.sim.WebhookDeliveries() != 0 {
		t.Errorf("attempts %d failures %d deliveries %d", e.sim.WebhookAttempts(), e.sim.WebhookFailures(), e.sim.WebhookDeliveries())
	}
	if time.Since(start) < 2600*time.Millisecond {
		t.Errorf("retries too fast: %v", time.Since(start))
	}
}

func TestRateLimitSlidingWindow(t *testing.T) {
	e := newEnv(t)
	e.sim.SetRateLimit(testClientID, RateLimit{Requests: 3, Window: 10 * time.Second})
	e.sim.AddApp(AppConfig{ClientID: "app-2", ClientSecret: "x", RateLimit: RateLimit{Requests: 3, Window: 10 * time.Second}})
	n := 0
	create := func() resp {
		n++
		return e.basic("POST", "/connect/sessions", sessionBody(fmt.Sprintf("c%d", n), nil))
	}
	mustStatus := func(r resp, status int, retryAfter string) {
		t.Helper()
		if r.status != status {
			t.Fatalf("at %v: status %d want %d: %s", e.clock.Now().Format("05.000"), r.status, status, r.body)
		}
		if got := r.header.Get("Retry-After"); got != retryAfter {
			t.Fatalf("Retry-After %q want %q", got, retryAfter)
		}
	}
	mustStatus(create(), 201, "") // t=0
	e.clock.Advance(4 * time.Second)
	mustStatus(create(), 201, "") // t=4
	e.clock.Advance(4 * time.Second)
	mustStatus(create(), 201, "") // t=8
	e.clock.Advance(time.Second)
	r := create() // t=9: 3 in the last 10s; the t=0 slot frees at t=10
	mustStatus(r, 429, "1")
	expectError(t, r, 429, "rate_limit_exceeded_error", "finch_application_rl")
	if got := len(e.sim.Sessions()); got != 3 {
		t.Fatalf("a 429 must not create a session: %d sessions", got)
	}
	// Other endpoints and other apps have their own budget.
	expectError(t, e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{}), 400, "bad_request", "invalid_request")
	if r := e.do("POST", "/connect/sessions", sessionBody("x", nil), withBasic("app-2", "x")); r.status != 201 {
		t.Fatalf("app-2: %d", r.status)
	}
	e.clock.Advance(time.Second)
	mustStatus(create(), 201, "") // t=10: t=0 left the window
	e.clock.Advance(time.Second)
	mustStatus(create(), 429, "3") // t=11: window holds 4, 8, 10; the t=4 slot frees at 14
	e.clock.Advance(2500 * time.Millisecond)
	mustStatus(create(), 429, "1") // t=13.5: 0.5s left, rounded up
	e.clock.Advance(500 * time.Millisecond)
	mustStatus(create(), 201, "") // t=14
	if got := e.sim.Responses(EndpointCreateSession, 429); got != 3 {
		t.Errorf("429 responses %d", got)
	}
	if got := e.sim.Calls(EndpointCreateSession); got != 9 {
		t.Errorf("calls %d", got)
	}

	// /auth/token is attributed to the app by its body's client_id.
	e.sim.SetRateLimit(testClientID, RateLimit{Requests: 1, Window: time.Minute})
	expectError(t, e.exchange("no-such-code", ""), 400, "invalid_grant_error", "")
	r = e.exchange("no-such-code", "")
	expectError(t, r, 429, "rate_limit_exceeded_error", "finch_application_rl")
	if r.header.Get("Retry-After") != "60" {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// Bearer endpoints are attributed through the token's app.
	e.sim.SetRateLimit(testClientID, RateLimit{})
	_, _, tok := e.connect("bearer")
	e.sim.SetRateLimit(testClientID, RateLimit{Requests: 1, Window: time.Minute})
	if r := e.introspect(tok); r.status != 200 {
		t.Fatal(r.status)
	}
	expectError(t, e.introspect(tok), 429, "rate_limit_exceeded_error", "finch_application_rl")
}

// TestRateLimitPerClientID: the limit is the application's (its client_id), shared by every
// caller that presents that client_id, and a request Finch rejects for a wrong secret still
// counts (Rate-Limits docs: "A Finch application corresponds to a unique client_id").
func TestRateLimitPerClientID(t *testing.T) {
	e := newEnv(t)
	e.sim.SetRateLimit(testClientID, RateLimit{Requests: 3, Window: 10 * time.Second})
	// Two teams with the same credentials, and one with a mistyped secret.
	for i := range 2 {
		if r := e.basic("POST", "/connect/sessions", sessionBody(fmt.Sprintf("team-%d", i), nil)); r.status != 201 {
			t.Fatalf("session %d: %d %s", i, r.status, r.body)
		}
	}
	expectError(t, e.do("POST", "/connect/sessions", sessionBody("typo", nil), withBasic(testClientID, "mistyped")), 401, "invalid_client_error", "")
	r := e.basic("POST", "/connect/sessions", sessionBody("team-3", nil))
	expectError(t, r, 429, "rate_limit_exceeded_error", "finch_application_rl")
	e.clock.Advance(10 * time.Second)
	if r := e.basic("POST", "/connect/sessions", sessionBody("team-3", nil)); r.status != 201 {
		t.Fatalf("after the window: %d", r.status)
	}
}

func TestFaults(t *testing.T) {
	e := newEnv(t)
	// Status faults: two 503s with Retry-After, then normal service; nothing happens meanwhile.
	e.sim.InjectFault(EndpointCreateSession, Fault{Count: 2, Status: 503, RetryAfter: 1500 * time.Millisecond})
	for i := 0; i < 2; i++ {
		r := e.basic("POST", "/connect/sessions", sessionBody("acme", nil))
		expectError(t, r, 503, "service_unavailable_error", "")
		if r.header.Get("Retry-After") != "2" || r.header.Get("Finch-Request-Id") == "" {
			t.Errorf("headers %v", r.header)
		}
	}
	if len(e.sim.Sessions()) != 0 {
		t.Fatal("a faulted request took effect")
	}
	sid, _ := e.createSession("acme", nil)
	if e.sim.Responses(EndpointCreateSession, 503) != 2 || e.sim.Responses(EndpointCreateSession, 201) != 1 {
		t.Errorf("responses %v", e.sim.ResponseCounts())
	}

	// 429 fault.
	e.sim.InjectFault(EndpointToken, Fault{Status: 429, RetryAfter: 3 * time.Second})
	r := e.exchange("x", "")
	expectError(t, r, 429, "rate_limit_exceeded_error", "finch_application_rl")
	if r.header.Get("Retry-After") != "3" {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}

	// Queued faults are consumed in order.
	e.sim.InjectFault(EndpointToken, Fault{Status: 500})
	e.sim.InjectFault(EndpointToken, Fault{Status: 502})
	expectError(t, e.exchange("x", ""), 500, "server_error", "")
	expectError(t, e.exchange("x", ""), 502, "bad_gateway_error", "upstream_provider_error")
	expectError(t, e.exchange("x", ""), 400, "invalid_grant_error", "")

	// Latency.
	code, _ := e.sim.CompleteSession(sid, Completion{})
	tok := e.exchange(code, "").str(t, "access_token")
	e.sim.InjectFault(EndpointIntrospect, Fault{Latency: 200 * time.Millisecond})
	start := time.Now()
	if r := e.introspect(tok); r.status != 200 {
		t.Fatal(r.status)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("latency not applied: %v", d)
	}

	// "*" until cleared hits every Finch endpoint but not the Connect page or /_sim/.
	e.sim.InjectFault(EndpointAny, Fault{Count: -1, Status: 500})
	for i := 0; i < 3; i++ {
		expectError(t, e.introspect(tok), 500, "server_error", "")
	}
	expectError(t, e.basic("POST", "/connect/sessions", sessionBody("z", nil)), 500, "server_error", "")
	if r := e.do("GET", "/_sim/state", nil); r.status != 200 {
		t.Errorf("/_sim/ affected by *: %d", r.status)
	}
	e.sim.ClearFaults()
	if r := e.introspect(tok); r.status != 200 {
		t.Fatalf("after ClearFaults: %d", r.status)
	}

	// CommitThenDrop: the session is created, the client gets a network error, and a retry
	// returns the same session.
	e.sim.InjectFault(EndpointCreateSession, Fault{CommitThenDrop: true})
	if _, err := e.send("POST", "/connect/sessions", sessionBody("dropped", nil), withBasic(testClientID, testSecret)); err == nil {
		t.Fatal("CommitThenDrop: client got a response")
	}
	var dropped SessionInfo
	for _, s := range e.sim.Sessions() {
		if s.CustomerID == "dropped" {
			dropped = s
		}
	}
	if dropped.ID == "" {
		t.Fatal("CommitThenDrop: operation did not take effect")
	}
	if id, _ := e.createSession("dropped", nil); id != dropped.ID {
		t.Errorf("retry after drop gave %s, want %s", id, dropped.ID)
	}
	if e.sim.Responses(EndpointCreateSession, 0) != 1 {
		t.Errorf("dropped responses %v", e.sim.ResponseCounts()[EndpointCreateSession])
	}

	// CommitThenDrop on the code exchange: the code is burnt and a token exists.
	sid2, _ := e.createSession("burnt", nil)
	code2, _ := e.sim.CompleteSession(sid2, Completion{})
	e.sim.InjectFault(EndpointToken, Fault{CommitThenDrop: true})
	if _, err := e.send("POST", "/auth/token", map[string]any{"client_id": testClientID, "client_secret": testSecret, "code": code2}); err == nil {
		t.Fatal("CommitThenDrop on token: client got a response")
	}
	expectError(t, e.exchange(code2, ""), 400, "invalid_grant_error", "")
	si, _ := e.sim.Session(sid2)
	if ci, _ := e.sim.Connection(si.ConnectionID); ci.Tokens != 1 {
		t.Errorf("token not issued: %+v", ci)
	}

	// Faults can target the Connect page explicitly.
	_, u := e.createSession("page", nil)
	e.sim.InjectFault(EndpointAuthorize, Fault{Status: 502})
	if r := e.do("GET", u, nil); r.status != 502 {
		t.Errorf("authorize fault: %d", r.status)
	}
	if r := e.do("GET", u, nil); r.status != 200 {
		t.Errorf("authorize after fault: %d", r.status)
	}
}

func TestCounters(t *testing.T) {
	e := newEnv(t)
	e.do("POST", "/connect/sessions", sessionBody("a", nil)) // 401
	e.createSession("a", nil)
	e.createSession("b", nil)
	e.do("GET", "/introspect", nil) // 401
	if e.sim.Calls(EndpointCreateSession) != 3 || e.sim.Calls(EndpointIntrospect) != 1 {
		t.Errorf("calls %v", e.sim.CallCounts())
	}
	if e.sim.Responses(EndpointCreateSession, 401) != 1 || e.sim.Responses(EndpointCreateSession, 201) != 2 || e.sim.Responses(EndpointIntrospect, 401) != 1 {
		t.Errorf("responses %v", e.sim.ResponseCounts())
	}
	cc := e.sim.CallCounts()
	if len(cc) != 2 {
		t.Errorf("call counts %v", cc)
	}
	var calls map[string]int
	if err := json.Unmarshal(e.do("GET", "/_sim/calls", nil).body, &calls); err != nil || calls[EndpointCreateSession] != 3 {
		t.Errorf("/_sim/calls %v %v", calls, err)
	}
	var resps map[string]map[string]int
	if err := json.Unmarshal(e.do("GET", "/_sim/responses", nil).body, &resps); err != nil || resps[EndpointCreateSession]["201"] != 2 {
		t.Errorf("/_sim/responses %v %v", resps, err)
	}
	e.sim.ResetCounters()
	if e.sim.Calls(EndpointCreateSession) != 0 || len(e.sim.CallCounts()) != 0 || e.sim.Responses(EndpointCreateSession, 201) != 0 {
		t.Errorf("after reset %v", e.sim.CallCounts())
	}
	if len(e.sim.Sessions()) != 2 {
		t.Error("ResetCounters must not drop state")
	}
	e.createSession("c", nil)
	if r := e.do("DELETE", "/_sim/calls", nil); r.status != 204 || e.sim.Calls(EndpointCreateSession) != 0 {
		t.Errorf("DELETE /_sim/calls: %d", r.status)
	}
}

func TestSimHTTPEndpoints(t *testing.T) {
	var mu sync.Mutex
	hooks := 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hooks++
		mu.Unlock()
	}))
	defer recv.Close()
	e := newEnv(t)
	r := e.do("POST", "/_sim/apps", map[string]any{
		"client_id": "app-2", "client_secret": "pw", "webhook_url": recv.URL, "webhook_secret": "c2VjcmV0",
		"rate_limit": map[string]any{"requests": 100, "window": "1m"},
	})
	if r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	r = e.do("POST", "/connect/sessions", sessionBody("acme", nil), withBasic("app-2", "pw"))
	if r.status != 201 {
		t.Fatalf("app registered over HTTP: %d %s", r.status, r.body)
	}
	sid := r.str(t, "session_id")
	r = e.do("POST", "/_sim/sessions/"+sid+"/complete", map[string]any{"provider": "justworks", "status": "pending"})
	code := r.str(t, "code")
	if r.status != 200 || code == "" {
		t.Fatalf("complete: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/_sim/sessions/"+sid+"/complete", nil); r.status != 409 {
		t.Errorf("complete twice: %d", r.status)
	}
	if r := e.do("POST", "/_sim/sessions/nope/complete", nil); r.status != 404 {
		t.Errorf("complete unknown: %d", r.status)
	}
	var si SessionInfo
	_ = json.Unmarshal(e.do("GET", "/_sim/sessions/"+sid, nil).body, &si)
	if !si.Completed || si.ConnectionID == "" {
		t.Fatalf("session %+v", si)
	}
	r = e.do("POST", "/_sim/connections/"+si.ConnectionID+"/status", map[string]any{"status": "reauth"})
	if r.status != 200 || r.str(t, "status") != "reauth" || r.str(t, "provider_id") != "justworks" {
		t.Fatalf("status: %d %s", r.status, r.body)
	}
	e.sim.WaitWebhooks(5 * time.Second)
	mu.Lock()
	if hooks != 1 {
		t.Errorf("webhooks received %d", hooks)
	}
	mu.Unlock()
	if r := e.do("POST", "/_sim/connections/nope/status", map[string]any{"status": "reauth"}); r.status != 404 {
		t.Errorf("unknown connection: %d", r.status)
	}
	var state struct {
		Sessions    []SessionInfo    `json:"sessions"`
		Connections []ConnectionInfo `json:"connections"`
	}
	if err := json.Unmarshal(e.do("GET", "/_sim/state", nil).body, &state); err != nil || len(state.Sessions) != 1 || len(state.Connections) != 1 {
		t.Fatalf("state %+v %v", state, err)
	}
	if r := e.do("GET", "/_sim/connections/"+si.ConnectionID, nil); r.status != 200 {
		t.Errorf("get connection %d", r.status)
	}

	// Faults over HTTP.
	r = e.do("POST", "/_sim/faults", map[string]any{"endpoint": "POST /connect/sessions", "count": 1, "status": 429, "retry_after": "2s"})
	if r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	r = e.basic("POST", "/connect/sessions", sessionBody("b", nil))
	if r.status != 429 || r.header.Get("Retry-After") != "2" {
		t.Errorf("fault over HTTP: %d %v", r.status, r.header)
	}
	e.do("POST", "/_sim/faults", map[string]any{"endpoint": "*", "count": -1, "status": 500, "latency": 0.01})
	if r := e.basic("POST", "/connect/sessions", sessionBody("b", nil)); r.status != 500 {
		t.Errorf("got %d", r.status)
	}
	if r := e.do("DELETE", "/_sim/faults", nil); r.status != 204 {
		t.Errorf("DELETE faults %d", r.status)
	}
	if r := e.basic("POST", "/connect/sessions", sessionBody("b", nil)); r.status != 201 {
		t.Errorf("after DELETE faults: %d", r.status)
	}
	if r := e.do("POST", "/_sim/faults", map[string]any{"status": 500}); r.status != 400 {
		t.Errorf("fault without endpoint: %d", r.status)
	}
	if r := e.do("GET", "/_sim/nope", nil); r.status != 404 {
		t.Errorf("unknown sim route: %d", r.status)
	}
	// /_sim/ requests are not counted as Finch calls.
	for ep := range e.sim.CallCounts() {
		if strings.HasPrefix(ep, "GET /_sim") || strings.HasPrefix(ep, "POST /_sim") {
			t.Errorf("counted %s", ep)
		}
	}
}

func TestManySessions(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	e := newEnv(t)
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r, err := e.send("POST", "/connect/sessions", sessionBody(fmt.Sprintf("cust-%d", i), nil), withBasic(testClientID, testSecret))
				if err == nil && r.status != 201 {
					err = fmt.Errorf("status %d: %s", r.status, r.body)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := len(e.sim.Sessions()); got != n {
		t.Fatalf("sessions %d want %d", got, n)
	}
	t.Logf("%d sessions over HTTP in %v", n, time.Since(start))
}

func BenchmarkCreateSession(b *testing.B) {
	s := New(Options{})
	s.AddApp(AppConfig{ClientID: "a", ClientSecret: "b"})
	u := s.Start()
	defer s.Close()
	hc := &http.Client{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		body := fmt.Sprintf(`{"customer_id":"c%d","customer_name":"n","products":["company"]}`, i)
		req, _ := http.NewRequest("POST", u+"/connect/sessions", strings.NewReader(body))
		req.SetBasicAuth("a", "b")
		req.Header.Set("Finch-API-Version", apiVersion)
		res, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != 201 {
			b.Fatal(res.StatusCode)
		}
	}
}
