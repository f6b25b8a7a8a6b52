package finchsim

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// RFC 6749 §4.1.3 and Retrieve-Access-Token: a code is bound to its
// session's redirect_uri, exactly, and to its absence.
func TestTokenRedirectURIStrict(t *testing.T) {
	e := newEnv(t)
	const redirect = "https://app.example/cb"
	sid, _ := e.createSession("redir", map[string]any{"redirect_uri": redirect})
	code, _ := e.sim.CompleteSession(sid, Completion{})
	m := expectError(t, e.exchange(code, ""), 400, "invalid_grant_error", "")
	if !strings.Contains(m["message"].(string), "redirect_uri is required") {
		t.Errorf("message %q", m["message"])
	}
	expectError(t, e.exchange(code, redirect+"/"), 400, "invalid_grant_error", "")
	expectError(t, e.exchange(code, "HTTPS://app.example/cb"), 400, "invalid_grant_error", "") // exact match only
	if r := e.exchange(code, redirect); r.status != 200 {
		t.Fatalf("exchange with the session's redirect_uri after mismatches: %d %s (a mismatch must not burn the code)", r.status, r.body)
	}

	// Embedded: no redirect_uri on the session, none on the exchange; an empty
	// value counts as absent (RFC 6749 §3.1).
	sid, _ = e.createSession("embedded", nil)
	code, _ = e.sim.CompleteSession(sid, Completion{})
	expectError(t, e.exchange(code, redirect), 400, "invalid_grant_error", "")
	b := map[string]any{"client_id": testClientID, "client_secret": testSecret, "code": code, "redirect_uri": ""}
	if r := e.do("POST", "/auth/token", b); r.status != 200 {
		t.Fatalf("embedded exchange with an empty redirect_uri: %d %s", r.status, r.body)
	}

	// Reauthentication sessions follow the same rule.
	_, connID, _ := e.connect("reauth")
	r := e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": connID, "redirect_uri": redirect})
	code, _ = e.sim.CompleteSession(r.str(t, "session_id"), Completion{})
	expectError(t, e.exchange(code, ""), 400, "invalid_grant_error", "")
	if r := e.exchange(code, redirect); r.status != 200 {
		t.Fatalf("reauth exchange: %d %s", r.status, r.body)
	}
}

func TestIntrospectWithoutTopLevelStatus(t *testing.T) {
	e := newEnv(t)
	e.sim.AddApp(AppConfig{ClientID: testClientID, ClientSecret: testSecret, OmitTopLevelStatus: true})
	_, connID, tok := e.connect("guide")
	if err := e.sim.SetConnectionStatus(connID, "reauth"); err != nil {
		t.Fatal(err)
	}
	r := e.introspect(tok)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	// Exactly the Migration Guide example's fields, in its order.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{"account_id", "authentication_methods", "client_id", "client_type", "company_id", "connection_id",
		"connection_type", "manual", "payroll_provider_id", "products", "username"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys %v, want the guide's %v", keys, want)
	}
	if !strings.HasPrefix(string(r.body), `{"client_id":`) || strings.Contains(string(r.body), `"id":`) {
		t.Errorf("body %s", r.body)
	}
	var in struct {
		Methods []struct {
			Type             string            `json:"type"`
			ConnectionStatus map[string]string `json:"connection_status"`
		} `json:"authentication_methods"`
	}
	_ = json.Unmarshal(r.body, &in)
	if len(in.Methods) != 1 || in.Methods[0].ConnectionStatus["status"] != "reauth" || in.Methods[0].ConnectionStatus["message"] == "" ||
		len(in.Methods[0].ConnectionStatus) != 2 {
		t.Errorf("authentication_methods %+v", in.Methods)
	}
}

func TestMultiEntityConnections(t *testing.T) {
	const secret = "c2VjcmV0"
	var mu sync.Mutex
	var bodies []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
	}))
	defer recv.Close()
	e := newEnv(t)
	e.sim.AddApp(AppConfig{ClientID: testClientID, ClientSecret: testSecret, WebhookURL: recv.URL, WebhookSecret: secret})

	sid, _ := e.createSession("multi", nil)
	code, err := e.sim.CompleteSession(sid, Completion{Entities: []EntityInfo{
		{ID: "11111111-1111-4111-8111-111111111111", Name: "Acme East", SourceID: "src-east"},
		{Name: "Acme West", Status: "pending"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tr := e.exchange(code, "")
	var tok struct {
		AccessToken  string   `json:"access_token"`
		ConnectionID string   `json:"connection_id"`
		EntityIDs    []string `json:"entity_ids"`
	}
	_ = json.Unmarshal(tr.body, &tok)
	if len(tok.EntityIDs) != 2 || tok.EntityIDs[0] != "11111111-1111-4111-8111-111111111111" || tok.EntityIDs[1] == "" {
		t.Fatalf("entity_ids %v (%s)", tok.EntityIDs, tr.body)
	}
	r := e.introspect(tok.AccessToken)
	var in struct {
		Entities []map[string]any `json:"entities"`
	}
	_ = json.Unmarshal(r.body, &in)
	if len(in.Entities) != 2 || in.Entities[0]["name"] != "Acme East" || in.Entities[0]["source_id"] != "src-east" ||
		in.Entities[0]["status"] != "connected" || in.Entities[1]["status"] != "pending" {
		t.Fatalf("entities %v", in.Entities)
	}
	if v, ok := in.Entities[1]["source_id"]; !ok || v != nil {
		t.Errorf("an empty source_id must be null, got %v (present %v)", v, ok)
	}

	// One entity's status, with its own webhook.
	west := tok.EntityIDs[1]
	if err := e.sim.SetEntityStatus(tok.ConnectionID, west, "disconnected"); err != nil {
		t.Fatal(err)
	}
	e.sim.WaitWebhooks(5 * time.Second)
	ci, _ := e.sim.Connection(tok.ConnectionID)
	if ci.Status != "connected" || len(ci.Entities) != 2 || ci.Entities[1].Status != "disconnected" {
		t.Errorf("connection %+v", ci)
	}
	mu.Lock()
	if len(bodies) != 1 || !strings.Contains(bodies[0], `"entity_id":"`+west+`"`) || !strings.Contains(bodies[0], `"status":"disconnected"`) {
		t.Errorf("entity webhook bodies %v", bodies)
	}
	mu.Unlock()
	if err := e.sim.SetEntityStatus(tok.ConnectionID, "nope", "reauth"); !errors.Is(err, ErrEntityNotFound) {
		t.Errorf("unknown entity: %v", err)
	}
	if err := e.sim.SetEntityStatus(tok.ConnectionID, west, ""); !errors.Is(err, ErrInvalidStatus) {
		t.Errorf("empty status: %v", err)
	}

	// A single-entity connection has no entities[]; adding some keeps its own first.
	_, connID, tok2 := e.connect("single")
	if strings.Contains(string(e.introspect(tok2).body), `"entities"`) {
		t.Error("a single-entity connection reports entities")
	}
	first, _ := e.sim.Connection(connID)
	all, err := e.sim.AddEntities(connID, EntityInfo{Name: "Second Co"})
	if err != nil || len(all) != 2 || all[1].Name != "Second Co" || all[1].Status != "connected" {
		t.Fatalf("AddEntities: %v %+v", err, all)
	}
	sandbox := e.do("PUT", "/sandbox/connections/accounts", map[string]any{}, withBearer(tok2))
	if sandbox.str(t, "entity_id") != all[0].ID || first.Entities != nil {
		t.Errorf("the original entity is not first: %s vs %+v", sandbox.body, all)
	}
	if _, err := e.sim.AddEntities("nope"); !errors.Is(err, ErrConnectionNotFound) {
		t.Errorf("AddEntities unknown connection: %v", err)
	}

	// Over HTTP.
	r = e.do("POST", "/_sim/connections/"+connID+"/entities", map[string]any{"entities": []map[string]any{{"name": "Third", "status": "reauth"}}})
	var added struct {
		Entities []EntityInfo `json:"entities"`
	}
	if err := json.Unmarshal(r.body, &added); err != nil || r.status != 200 || len(added.Entities) != 3 || added.Entities[2].Status != "reauth" {
		t.Fatalf("POST entities: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/_sim/connections/"+connID+"/entities/"+added.Entities[2].ID+"/status", map[string]any{"status": "connected"})
	if r.status != 200 || r.str(t, "status") != "connected" || r.str(t, "id") != added.Entities[2].ID {
		t.Errorf("POST entity status: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/_sim/connections/"+connID+"/entities/nope/status", map[string]any{"status": "connected"}); r.status != 404 {
		t.Errorf("unknown entity over HTTP: %d", r.status)
	}
	if r := e.do("POST", "/_sim/connections/"+connID+"/entities", map[string]any{}); r.status != 400 {
		t.Errorf("no entities over HTTP: %d", r.status)
	}

	// Disconnect takes every entity with it.
	e.do("POST", "/disconnect", nil, withBearer(tok2))
	ci, _ = e.sim.Connection(connID)
	for _, en := range ci.Entities {
		if en.Status != "disconnected" {
			t.Errorf("entity %+v after disconnect", en)
		}
	}
}

// POST /disconnect-entity removes entities and leaves the others, the token and the connection's
// status alone, with one account.updated per removed entity; a reauthentication can bring one back.
func TestDisconnectEntity(t *testing.T) {
	const secret = "c2VjcmV0"
	var mu sync.Mutex
	var bodies []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
	}))
	defer recv.Close()
	e := newEnv(t)
	e.sim.AddApp(AppConfig{ClientID: testClientID, ClientSecret: testSecret, WebhookURL: recv.URL, WebhookSecret: secret})
	const east, west, north = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222", "33333333-3333-4333-8333-333333333333"
	sid, _ := e.createSession("multi", nil)
	code, err := e.sim.CompleteSession(sid, Completion{Entities: []EntityInfo{{ID: east}, {ID: west}, {ID: north}}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken  string `json:"access_token"`
		ConnectionID string `json:"connection_id"`
	}
	_ = json.Unmarshal(e.exchange(code, "").body, &tok)
	bearer := withBearer(tok.AccessToken)

	// Validation: nothing changes.
	expectError(t, e.do("POST", "/disconnect-entity", map[string]any{}, bearer), 400, "bad_request", "invalid_request")
	expectError(t, e.do("POST", "/disconnect-entity", map[string]any{"entity_ids": []string{}}, bearer), 400, "bad_request", "invalid_request")
	expectError(t, e.do("POST", "/disconnect-entity", map[string]any{"entity_ids": []string{"east"}}, bearer), 400, "bad_request", "invalid_request")
	expectError(t, e.do("POST", "/disconnect-entity", map[string]any{"entity_ids": []string{west, "44444444-4444-4444-8444-444444444444"}}, bearer), 400, "bad_request", "invalid_request")
	expectError(t, e.do("POST", "/disconnect-entity", map[string]any{"entity_ids": []string{east, west, north}}, bearer), 400, "bad_request", "invalid_request")
	expectError(t, e.do("POST", "/disconnect-entity", map[string]any{"entity_ids": []string{west}}), 401, "unauthorized_request_error", "")
	if ci, _ := e.sim.Connection(tok.ConnectionID); ci.Entities[1].Status != "connected" {
		t.Fatalf("a refused request changed entities: %+v", ci.Entities)
	}

	r := e.do("POST", "/disconnect-entity", map[string]any{"entity_ids": []string{west, north}}, bearer)
	if r.status != 200 || r.str(t, "status") != "success" {
		t.Fatalf("disconnect-entity: %d %s", r.status, r.body)
	}
	e.sim.WaitWebhooks(5 * time.Second)
	var in struct {
		ConnectionStatus struct{ Status string } `json:"connection_status"`
		Entities         []EntityInfo            `json:"entities"`
	}
	ir := e.introspect(tok.AccessToken)
	if err := json.Unmarshal(ir.body, &in); err != nil || ir.status != 200 {
		t.Fatalf("the token must stay valid: %d %s", ir.status, ir.body)
	}
	if in.ConnectionStatus.Status != "connected" || in.Entities[0].Status != "connected" || in.Entities[1].Status != "disconnected" || in.Entities[2].Status != "disconnected" {
		t.Errorf("introspection after disconnect-entity: %s", ir.body)
	}
	mu.Lock()
	all := strings.Join(bodies, "\n")
	if len(bodies) != 2 || !strings.Contains(all, `"entity_id":"`+west+`"`) || !strings.Contains(all, `"entity_id":"`+north+`"`) ||
		strings.Count(all, `"status":"disconnected"`) != 2 {
		t.Errorf("one account.updated per removed entity, got %v", bodies)
	}
	mu.Unlock()
	// A removed entity again: accepted, no second webhook; the last active one cannot go.
	if r := e.do("POST", "/disconnect-entity", map[string]any{"entity_ids": []string{west}}, bearer); r.status != 200 {
		t.Errorf("repeat: %d %s", r.status, r.body)
	}
	expectError(t, e.do("POST", "/disconnect-entity", map[string]any{"entity_ids": []string{east}}, bearer), 400, "bad_request", "invalid_request")
	e.sim.WaitWebhooks(5 * time.Second)
	mu.Lock()
	if len(bodies) != 2 {
		t.Errorf("a repeat sent a webhook: %v", bodies)
	}
	mu.Unlock()

	// A reauthentication in which the employer selects west again brings it back.
	rr := e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": tok.ConnectionID})
	if _, err := e.sim.CompleteSession(rr.str(t, "session_id"), Completion{Entities: []EntityInfo{{ID: west}}}); err != nil {
		t.Fatal(err)
	}
	if ci, _ := e.sim.Connection(tok.ConnectionID); ci.Entities[1].Status != "connected" || ci.Entities[2].Status != "disconnected" {
		t.Errorf("after reauthentication: %+v", ci.Entities)
	}

	// A single-entity connection has nothing to remove but itself.
	_, connID, tok2 := e.connect("single")
	if err := e.sim.DisconnectEntities(connID, "55555555-5555-4555-8555-555555555555"); err == nil {
		t.Error("DisconnectEntities accepted an unknown entity")
	}
	expectError(t, e.do("POST", "/disconnect-entity", map[string]any{"entity_ids": []string{"55555555-5555-4555-8555-555555555555"}}, withBearer(tok2)), 400, "bad_request", "invalid_request")
}

func TestSessionLinkFields(t *testing.T) {
	e := newEnv(t)
	_, connID, _ := e.connect("links")
	reauth := func() map[string]any {
		r := e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": connID})
		if r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		return r.obj(t)
	}
	if m := reauth(); m["connect_url"] == nil || len(m) != 2 {
		t.Errorf("default: %v", m)
	}
	e.sim.AddApp(AppConfig{ClientID: testClientID, ClientSecret: testSecret, ReauthURLField: URLFieldURL, SessionURLField: URLFieldNone})
	if m := reauth(); m["url"] == nil || m["connect_url"] != nil || !strings.Contains(m["url"].(string), "/authorize?session="+m["session_id"].(string)) {
		t.Errorf("url: %v", m)
	}
	if m := e.basic("POST", "/connect/sessions", sessionBody("other", nil)).obj(t); len(m) != 1 || m["session_id"] == "" {
		t.Errorf("none: %v", m)
	}
	e.sim.AddApp(AppConfig{ClientID: testClientID, ClientSecret: testSecret, ReauthURLField: URLFieldNone})
	if m := reauth(); len(m) != 1 || m["session_id"] == "" {
		t.Errorf("reauth none: %v", m)
	}
	// Over HTTP.
	if r := e.do("POST", "/_sim/apps", map[string]any{"client_id": "a2", "client_secret": "x", "reauth_url_field": "bogus"}); r.status != 400 {
		t.Errorf("bogus url field: %d", r.status)
	}
	if r := e.do("POST", "/_sim/apps", map[string]any{"client_id": "a2", "client_secret": "x", "session_url_field": "url", "omit_top_level_status": true}); r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if m := e.do("POST", "/connect/sessions", sessionBody("a2c", nil), withBasic("a2", "x")).obj(t); m["url"] == nil {
		t.Errorf("session_url_field over HTTP: %v", m)
	}
}

func TestIPRateLimit(t *testing.T) {
	e := newEnv(t)
	e.sim.AddApp(AppConfig{ClientID: "app-2", ClientSecret: "x"})
	e.sim.SetIPRateLimit(IPRateLimit{Enabled: true, Requests: 2, Window: 10 * time.Second, Penalty: 30 * time.Second})
	e.createSession("a", nil)                                                         // t=0
	e.clock.Advance(time.Second)                                                      //
	e.do("POST", "/connect/sessions", sessionBody("b", nil), withBasic("app-2", "x")) // t=1, another app, same IP
	if r := e.do("GET", "/_sim/state", nil); r.status != 200 {                        // /_sim/ is not counted
		t.Fatal(r.status)
	}
	r := e.basic("POST", "/connect/sessions", sessionBody("c", nil)) // t=1: third in 10s
	expectError(t, r, 429, "rate_limit_exceeded_error", "finch_api_ip_rl")
	if r.header.Get("Retry-After") != "30" {
		t.Errorf("Retry-After %q, want the penalty (30)", r.header.Get("Retry-After"))
	}
	if u := e.sim.IPPenaltyUntil("127.0.0.1"); !u.Equal(e.clock.Now().Add(30 * time.Second)) {
		t.Errorf("IPPenaltyUntil %v", u)
	}
	// Every endpoint and app from that IP is refused until the penalty ends, and it is not extended.
	e.clock.Advance(20 * time.Second) // t=21: the window alone would have freed up
	r = e.do("GET", "/introspect", nil, withBearer("x"))
	expectError(t, r, 429, "rate_limit_exceeded_error", "finch_api_ip_rl")
	if r.header.Get("Retry-After") != "10" {
		t.Errorf("Retry-After %q, want the rest of the penalty (10)", r.header.Get("Retry-After"))
	}
	if n := len(e.sim.Sessions()); n != 2 {
		t.Errorf("sessions %d: a refused request took effect", n)
	}
	e.clock.Advance(10 * time.Second) // t=31: over
	if !e.sim.IPPenaltyUntil("127.0.0.1").IsZero() {
		t.Error("penalty still running")
	}
	if _, url := e.createSession("d", nil); url == "" {
		t.Error("no connect URL after the penalty")
	}
	if got := e.sim.Responses(EndpointCreateSession, 429) + e.sim.Responses(EndpointIntrospect, 429); got != 2 {
		t.Errorf("429 responses %d", got)
	}

	// The Connect page is the employer's browser: not counted.
	e.sim.SetIPRateLimit(IPRateLimit{})
	e.sim.SetIPRateLimit(IPRateLimit{Enabled: true, Requests: 2, Window: time.Minute})
	_, connectURL := e.createSession("page", nil)
	page := e.do("GET", connectURL, nil)
	if page.status != 200 {
		t.Fatalf("authorize: %d %s", page.status, page.body)
	}
	if r := e.exchange(page.str(t, "code"), ""); r.status != 200 {
		t.Fatalf("exchange as the second counted request: %d %s", r.status, r.body)
	}

	// Without Retry-After, as Finch documents none.
	e.sim.SetIPRateLimit(IPRateLimit{})
	e.sim.SetIPRateLimit(IPRateLimit{Enabled: true, Requests: 1, Window: time.Minute, NoRetryAfter: true})
	e.createSession("e", nil)
	r = e.basic("POST", "/connect/sessions", sessionBody("f", nil))
	expectError(t, r, 429, "rate_limit_exceeded_error", "finch_api_ip_rl")
	if r.header.Get("Retry-After") != "" {
		t.Errorf("Retry-After %q with NoRetryAfter", r.header.Get("Retry-After"))
	}
	if u := e.sim.IPPenaltyUntil("127.0.0.1"); !u.Equal(e.clock.Now().Add(DefaultIPPenalty)) {
		t.Errorf("default penalty: until %v, want now+60m", u)
	}
	// Disabling lifts it.
	if r := e.do("DELETE", "/_sim/ip-limit", nil); r.status != 204 {
		t.Fatal(r.status)
	}
	if r := e.basic("POST", "/connect/sessions", sessionBody("g", nil)); r.status != 201 {
		t.Errorf("after DELETE /_sim/ip-limit: %d", r.status)
	}
	// Over HTTP; zero fields take Finch's figures.
	r = e.do("POST", "/_sim/ip-limit", map[string]any{})
	if r.status != 200 || r.obj(t)["requests"].(float64) != DefaultIPRequests || int64(r.obj(t)["penalty"].(float64)) != int64(DefaultIPPenalty) {
		t.Errorf("POST /_sim/ip-limit: %d %s", r.status, r.body)
	}
}

func TestFaultBodies(t *testing.T) {
	e := newEnv(t)
	e.sim.InjectFault(EndpointCreateSession, Fault{Status: 409})
	expectError(t, e.basic("POST", "/connect/sessions", sessionBody("a", nil)), 409, "conflict_error", "")
	e.sim.InjectFault(EndpointIntrospect, Fault{Status: 401})
	expectError(t, e.do("GET", "/introspect", nil), 401, "authentication_error", "reauthenticate_user")
	e.sim.InjectFault(EndpointIntrospect, Fault{Status: 401, Name: "authentication_error", FinchCode: "account_setup_required"})
	expectError(t, e.do("GET", "/introspect", nil), 401, "authentication_error", "account_setup_required")

	e.sim.InjectFault(EndpointDisconnect, Fault{Status: 401, Body: "<html>401 Authorization Required</html>", XShouldRetry: "false"})
	r := e.do("POST", "/disconnect", nil)
	if r.status != 401 || string(r.body) != "<html>401 Authorization Required</html>" ||
		!strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || r.header.Get("X-Should-Retry") != "false" {
		t.Errorf("verbatim fault: %d %q %v", r.status, r.body, r.header)
	}
	// Over HTTP.
	e.do("POST", "/_sim/faults", map[string]any{"endpoint": EndpointDisconnect, "status": 401, "body": `{"message":"Unauthorized"}`, "x_should_retry": "true"})
	r = e.do("POST", "/disconnect", nil)
	if r.status != 401 || string(r.body) != `{"message":"Unauthorized"}` || r.header.Get("Content-Type") != "application/json" || r.header.Get("X-Should-Retry") != "true" {
		t.Errorf("fault over HTTP: %d %q %v", r.status, r.body, r.header)
	}
}
