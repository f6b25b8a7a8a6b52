package finchsim

import (
	"html"
	"net/http"
	"strings"
	"testing"
)

var asBrowser = withHeader("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")

// A browser gets a page for a person: the customer (escaped), the products,
// the pickers and the outcome buttons; nothing is completed by opening it.
func TestConnectPageForAPerson(t *testing.T) {
	e := newEnv(t)
	id, connectURL := e.createSession("acme", map[string]any{
		"customer_name": `Acme <script>alert(1)</script>`, "customer_email": "hr@acme.example",
		"products": []string{"company", "directory", "payment"}, "redirect_uri": "https://app.example/cb",
	})
	r := e.do("GET", connectURL+"&state=s1", nil, asBrowser)
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %s", r.status, r.header.Get("Content-Type"))
	}
	body := string(r.body)
	for _, want := range []string{
		html.EscapeString(`Acme <script>alert(1)</script>`), "hr@acme.example",
		"<li>company</li>", "<li>directory</li>", "<li>payment</li>",
		`name="provider"`, `<option value="adp_run">`, `name="auth_method"`, `<option value="assisted">`,
		`name="state" value="s1"`, `name="auto" value="1"`,
		`value="connected"`, `value="pending"`, `value="error"`, `value="cancel"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>") {
		t.Error("the customer name is not escaped")
	}
	if se, _ := e.sim.Session(id); se.Completed {
		t.Fatal("opening the page completed the session")
	}
}

// The page's buttons: connected and pending redirect with code and state;
// error and cancel answer a page and leave the session open.
func TestConnectPageOutcomes(t *testing.T) {
	e := newEnv(t)
	id, connectURL := e.createSession("acme", map[string]any{"redirect_uri": "https://app.example/cb"})
	for _, outcome := range []string{OutcomeCancel, OutcomeError} {
		r := e.do("GET", connectURL+"&auto=1&state=s1&outcome="+outcome, nil, asBrowser)
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `data-outcome="`+outcome+`"`) {
			t.Fatalf("%s: %d %s", outcome, r.status, r.body)
		}
		if se, _ := e.sim.Session(id); se.Completed {
			t.Fatalf("%s completed the session", outcome)
		}
	}
	r := e.do("GET", connectURL+"&auto=1&state=s1&outcome=pending&provider=paychex_flex", nil, asBrowser)
	if r.status != http.StatusFound {
		t.Fatalf("pending: %d %s", r.status, r.body)
	}
	q := queryOf(t, r.header.Get("Location"))
	if q.Get("code") == "" || q.Get("state") != "s1" {
		t.Fatalf("Location %q", r.header.Get("Location"))
	}
	se, _ := e.sim.Session(id)
	c, _ := e.sim.Connection(se.ConnectionID)
	if c.Status != "pending" || c.AuthMethod != "assisted" || c.ProviderID != "paychex_flex" {
		t.Fatalf("connection %+v, want pending assisted paychex_flex", c)
	}
	if r := e.do("GET", connectURL+"&auto=1&outcome=bogus", nil); r.status != http.StatusBadRequest {
		t.Fatalf("bogus outcome: %d", r.status)
	}
}

// Scripts keep the automatic completion: no text/html in Accept (curl's
// */*, Go's client), or auto=1 from a browser.
func TestConnectPageScriptsComplete(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name string
		opts []reqOpt
		q    string
	}{
		{"curl", []reqOpt{withHeader("Accept", "*/*")}, ""},
		{"browser with auto=1", []reqOpt{asBrowser}, "&auto=1"},
	} {
		_, connectURL := e.createSession("cust-"+strings.ReplaceAll(c.name, " ", "-"), map[string]any{"redirect_uri": "https://app.example/cb"})
		r := e.do("GET", connectURL+c.q, nil, c.opts...)
		if r.status != http.StatusFound || queryOf(t, r.header.Get("Location")).Get("code") == "" {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
}
