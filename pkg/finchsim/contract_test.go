package finchsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// recordkeeping is validated as finch-api-node 10.8.0 src/resources/connect/sessions.ts types it,
// and only with the recordkeeping product.
func TestRecordkeepingStrict(t *testing.T) {
	e := newEnv(t)
	withProduct := func(rk any) map[string]any {
		return map[string]any{"products": []string{"company", "recordkeeping"}, "recordkeeping": rk}
	}
	sid, _ := e.createSession("acme", withProduct(map[string]any{"recordkeeper": "voya", "plan_id": "p-1"}))
	se, _ := e.sim.Session(sid)
	if se.Recordkeeping == nil || *se.Recordkeeping != (Recordkeeping{Recordkeeper: "voya", PlanID: "p-1"}) {
		t.Errorf("session recordkeeping = %+v", se.Recordkeeping)
	}
	sid, _ = e.createSession("globex", withProduct(map[string]any{"recordkeeper": "fidelity", "plan_id": nil}))
	if se, _ := e.sim.Session(sid); se.Recordkeeping == nil || se.Recordkeeping.Recordkeeper != "fidelity" || se.Recordkeeping.PlanID != "" {
		t.Errorf("session recordkeeping = %+v", se.Recordkeeping)
	}
	sid, _ = e.createSession("initech", map[string]any{"recordkeeping": nil})
	if se, _ := e.sim.Session(sid); se.Recordkeeping != nil {
		t.Errorf("null recordkeeping recorded as %+v", se.Recordkeeping)
	}
	for name, body := range map[string]map[string]any{
		"without the product":    {"recordkeeping": map[string]any{"recordkeeper": "voya"}},
		"unknown recordkeeper":   withProduct(map[string]any{"recordkeeper": "vanguard"}),
		"missing recordkeeper":   withProduct(map[string]any{"plan_id": "p"}),
		"not an object":          withProduct("voya"),
		"plan_id not a string":   withProduct(map[string]any{"recordkeeper": "voya", "plan_id": 7}),
		"recordkeeper not a str": withProduct(map[string]any{"recordkeeper": true}),
	} {
		r := e.basic("POST", "/connect/sessions", sessionBody("bad-"+name, body))
		expectError(t, r, 400, "bad_request", "invalid_request")
	}
}

// The initial data sync webhooks come once per connection, after its first code exchange, signed,
// in finch-api-node's JobCompletionEvent shape, for the kinds of data its products call for.
func TestInitialSyncWebhooks(t *testing.T) {
	const secret = "5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH"
	type delivery struct {
		h    http.Header
		body []byte
		at   time.Time
	}
	var mu sync.Mutex
	var got []delivery
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, delivery{r.Header.Clone(), b, time.Now()})
		mu.Unlock()
	}))
	defer recv.Close()
	e := newEnv(t)
	e.sim.AddApp(AppConfig{ClientID: testClientID, ClientSecret: testSecret, WebhookURL: recv.URL, WebhookSecret: secret})

	// Off by default.
	e.connect("off")
	e.sim.WaitWebhooks(5 * time.Second)
	if len(got) != 0 {
		t.Fatalf("%d webhooks with initial sync off", len(got))
	}

	const delay = 200 * time.Millisecond
	e.sim.SetInitialSync(InitialSync{Enabled: true, Delay: delay})
	sid, _ := e.createSession("acme", map[string]any{"products": []string{"company", "payment"}})
	code, err := e.sim.CompleteSession(sid, Completion{})
	if err != nil {
		t.Fatal(err)
	}
	exchanged := time.Now()
	tr := e.exchange(code, "")
	connID := tr.str(t, "connection_id")
	if !e.sim.WaitWebhooks(10 * time.Second) {
		t.Fatal("webhooks still in flight")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d webhooks, want the organization and the payroll initial sync", len(got))
	}
	ci, _ := e.sim.Connection(connID)
	for i, typ := range []string{EventInitialSyncOrg, EventInitialSyncPayroll} {
		d := got[i]
		if err := verifyFinchSignature(secret, d.h, d.body, e.clock.Now()); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
		var ev struct {
			AccountID    string `json:"account_id"`
			CompanyID    string `json:"company_id"`
			ConnectionID string `json:"connection_id"`
			EventType    string `json:"event_type"`
			Data         struct {
				JobID  string `json:"job_id"`
				JobURL string `json:"job_url"`
			} `json:"data"`
		}
		if err := json.Unmarshal(d.body, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.EventType != typ || ev.ConnectionID != connID || ev.AccountID != ci.AccountID || ev.CompanyID != ci.CompanyID ||
			ev.Data.JobID == "" || ev.Data.JobURL != e.url+"/jobs/automated/"+ev.Data.JobID {
			t.Errorf("webhook %d: %s", i, d.body)
		}
		if wait := d.at.Sub(exchanged); wait < delay*time.Duration(i+1) {
			t.Errorf("%s came %v after the exchange, want at least %v", typ, wait, delay*time.Duration(i+1))
		}
	}
	got = nil
	mu.Unlock()

	// A reauthentication's code exchange is not a new connection: nothing more.
	rr := e.basic("POST", "/connect/sessions/reauthenticate", map[string]any{"connection_id": connID})
	code, err = e.sim.CompleteSession(rr.str(t, "session_id"), Completion{})
	if err != nil {
		t.Fatal(err)
	}
	e.exchange(code, "")
	// Organization products only: the organization sync alone.
	e.connect("globex")
	e.sim.WaitWebhooks(10 * time.Second)
	mu.Lock()
	if len(got) != 1 || !json.Valid(got[0].body) {
		t.Fatalf("%d webhooks after a reauthentication and a company+directory connection, want 1", len(got))
	}
	var ev struct {
		EventType string `json:"event_type"`
	}
	_ = json.Unmarshal(got[0].body, &ev)
	if ev.EventType != EventInitialSyncOrg {
		t.Errorf("company+directory connection got %s", ev.EventType)
	}
}

// A fault limited to one connection (or token) fails only its requests; calls are counted per
// connection.
func TestConnectionFault(t *testing.T) {
	e := newEnv(t)
	_, a, tokA := e.connect("a")
	_, b, tokB := e.connect("b")
	e.sim.InjectFault(EndpointIntrospect, Fault{Count: -1, Status: 500, ConnectionID: a})
	for range 3 {
		expectError(t, e.introspect(tokA), 500, "server_error", "")
		if r := e.introspect(tokB); r.status != 200 {
			t.Fatalf("other connection: %d %s", r.status, r.body)
		}
	}
	if n := e.sim.ConnectionCalls(a, EndpointIntrospect); n != 3 {
		t.Errorf("calls for a = %d, want 3", n)
	}
	if ci, _ := e.sim.Connection(b); ci.Calls[EndpointIntrospect] != 3 {
		t.Errorf("calls for b = %v", ci.Calls)
	}
	e.sim.ClearFaults()
	e.sim.InjectFault(EndpointIntrospect, Fault{Count: -1, Status: 502, Token: tokB})
	if r := e.introspect(tokA); r.status != 200 {
		t.Errorf("a after the token fault moved to b: %d", r.status)
	}
	expectError(t, e.introspect(tokB), 502, "bad_gateway_error", "upstream_provider_error")
	// Over /_sim/ as well.
	e.sim.ClearFaults()
	if r := e.do("POST", "/_sim/faults", map[string]any{"endpoint": EndpointIntrospect, "count": -1, "status": 500, "connection_id": b}); r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	expectError(t, e.introspect(tokB), 500, "server_error", "")
	if r := e.introspect(tokA); r.status != 200 {
		t.Errorf("a: %d", r.status)
	}
}

// last_successful_sync is "date-time or any string" (finch-api-node src/resources/account.ts):
// the simulator can send a string that is not a timestamp, top level and per method.
func TestLastSuccessfulSyncAnyString(t *testing.T) {
	e := newEnv(t)
	_, connID, tok := e.connect("acme")
	lastSyncs := func() (top, method any) {
		m := e.introspect(tok).obj(t)
		top = m["connection_status"].(map[string]any)["last_successful_sync"]
		method = m["authentication_methods"].([]any)[0].(map[string]any)["connection_status"].(map[string]any)["last_successful_sync"]
		return top, method
	}
	top, method := lastSyncs()
	if _, err := time.Parse(time.RFC3339, top.(string)); err != nil || method != top {
		t.Errorf("last_successful_sync = %v / per method %v, want the same date-time", top, method)
	}
	if r := e.do("POST", "/_sim/connections/"+connID+"/last-sync", map[string]any{"value": "syncing"}); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if top, method = lastSyncs(); top != "syncing" || method != "syncing" {
		t.Errorf("last_successful_sync = %v / per method %v, want \"syncing\"", top, method)
	}
	if err := e.sim.SetLastSuccessfulSync("nope", "x"); err == nil {
		t.Error("unknown connection accepted")
	}
}
