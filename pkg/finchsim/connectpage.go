package finchsim

import (
	"html/template"
	"net/http"
	"strings"
)

// The Connect page for a person. A browser (Accept: text/html) opening connect_url without
// auto=1 gets a page showing the session's customer and products with a provider and
// authentication method picker and one button per outcome; the buttons submit GET /authorize
// again with auto=1 and the choice, which completes the session as scripts always have. Scripts
// (curl, Go's http.Client: no text/html in Accept) and auto=1 keep the automatic completion.
//
// The outcomes are those Finch Connect's SDK reports (finch-connect-sdk src/types.ts: onSuccess
// {code, state}, onError {errorMessage, errorType: 'validation_error' |
// 'employer_connection_error'}, onClose): "connected" and "pending" complete the session and
// redirect with the code; "error" and "cancel" do not, because no source documents an error or
// cancel parameter on the redirect (the employer simply never comes back), so the session stays
// open until it expires.

// Outcomes the Connect page offers (the outcome query parameter with auto=1).
const (
	OutcomeConnected = "connected" // complete with the chosen status (default "connected")
	OutcomePending   = "pending"   // assisted connection Finch still sets up: status "pending", auth method "assisted"
	OutcomeError     = "error"     // the provider refused the credentials; no redirect, the session stays open
	OutcomeCancel    = "cancel"    // the employer closed Connect; no redirect, the session stays open
)

// Providers and AuthMethods are the choices of the Connect page's pickers (any other value is
// accepted from a script). The IDs are Finch's provider IDs as /introspect's provider_id shows
// them (developer.tryfinch.com/developer-resources/Providers) and the authentication types of
// finch-api-node src/resources/account.ts (assisted, credential, api_token, api_credential,
// oauth).
var (
	Providers   = []string{"gusto", "adp_run", "adp_workforce_now", "bamboo_hr", "justworks", "paychex_flex", "paylocity", "quickbooks", "rippling", "trinet", "workday"}
	AuthMethods = []string{"credential", "api_token", "api_credential", "oauth", "assisted"}
)

type connectPage struct {
	Session, State, AppType            string
	Customer, Email                    string
	Reauth                             bool
	Products                           []string
	Providers, AuthMethods             []string
	Provider, AuthMethod, LockedReason string
}

// wantsConnectPage is a browser asking for the page rather than a script completing the session.
func wantsConnectPage(r *http.Request) bool {
	q := r.URL.Query()
	return q.Get("auto") != "1" && strings.Contains(r.Header.Get("Accept"), "text/html")
}

// serveConnectPage renders the Connect page of a session that can still be completed.
func (s *Sim) serveConnectPage(w http.ResponseWriter, r *http.Request, id string) {
	q := r.URL.Query()
	s.mu.Lock()
	se := s.sessions[id]
	var err error
	switch {
	case se == nil:
		err = ErrSessionNotFound
	case se.completed:
		err = ErrSessionCompleted
	case !s.now().Before(se.expiresAt):
		err = ErrSessionExpired
	}
	if err != nil {
		s.mu.Unlock()
		writeDriverError(w, r, err)
		return
	}
	p := connectPage{
		Session: id, State: q.Get("state"), AppType: q.Get("app_type"),
		Customer: se.customerName, Email: se.customerEmail, Reauth: se.kind == kindReauth,
		Products: cloneStrings(se.products), Providers: Providers, AuthMethods: AuthMethods,
		Provider:   firstNonEmpty(q.Get("provider"), se.integrationProvider, "gusto"),
		AuthMethod: firstNonEmpty(q.Get("auth_method"), se.integrationAuthMethod, "credential"),
	}
	if c := s.connections[se.connectionID]; p.Reauth && c != nil {
		// A reauthentication keeps the connection's provider and method.
		p.Provider, p.AuthMethod = c.providerID, c.authMethod
		p.LockedReason = "Reconnecting your existing connection"
	} else if se.integrationProvider != "" {
		p.LockedReason = "Chosen by the application (integration.provider)"
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	_ = connectPageTmpl.Execute(w, p)
}

// serveOutcomePage answers the outcomes that do not complete the session.
func serveOutcomePage(w http.ResponseWriter, outcome string, retryURL string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	title, msg := "Connection closed", "You closed Finch Connect. Nothing was connected; you can start again from the link you were sent."
	if outcome == OutcomeError {
		title, msg = "We could not connect to your provider", "The provider refused the sign-in (employer_connection_error). Check your credentials and try again."
	}
	_ = outcomeTmpl.Execute(w, map[string]string{"Title": title, "Message": msg, "Retry": retryURL, "Outcome": outcome})
}

const pageStyle = `body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1b1f24}
h1{font-size:1.4rem}.card{border:1px solid #d0d7de;border-radius:8px;padding:1rem 1.25rem;margin:1rem 0}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}select{width:100%;padding:.4rem;font-size:1rem}
.buttons{display:flex;flex-wrap:wrap;gap:.5rem;margin-top:1.25rem}button{padding:.5rem 1rem;font-size:1rem;border-radius:6px;border:1px solid #8c959f;background:#f6f8fa;cursor:pointer}
button.primary{background:#1f6feb;color:#fff;border-color:#1f6feb}.muted{color:#57606a;font-size:.9rem}ul{margin:.25rem 0}`

var connectPageTmpl = template.Must(template.New("connect").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Finch Connect (simulator)</title><style>` + pageStyle + `</style></head>
<body>
<h1>{{if .Reauth}}Reconnect{{else}}Connect{{end}} your payroll or HR system</h1>
<p class="muted">Finch Connect simulator: choose what the employer does.</p>
<div class="card" id="session">
<div>Customer: <strong id="customer">{{.Customer}}</strong>{{if .Email}} <span class="muted">({{.Email}})</span>{{end}}</div>
<div>The application asks for:</div>
<ul id="products">{{range .Products}}<li>{{.}}</li>{{end}}</ul>
</div>
<form method="get" action="authorize" id="connect">
<input type="hidden" name="session" value="{{.Session}}">
<input type="hidden" name="auto" value="1">
{{if .State}}<input type="hidden" name="state" value="{{.State}}">{{end}}
{{if .AppType}}<input type="hidden" name="app_type" value="{{.AppType}}">{{end}}
<label for="provider">Provider</label>
{{if .LockedReason}}<input type="hidden" name="provider" value="{{.Provider}}"><select id="provider" disabled><option>{{.Provider}}</option></select><div class="muted">{{.LockedReason}}</div>
{{else}}<select id="provider" name="provider">{{$p := .Provider}}{{range .Providers}}<option value="{{.}}"{{if eq . $p}} selected{{end}}>{{.}}</option>{{end}}</select>{{end}}
<label for="auth_method">Authentication method</label>
<select id="auth_method" name="auth_method">{{$m := .AuthMethod}}{{range .AuthMethods}}<option value="{{.}}"{{if eq . $m}} selected{{end}}>{{.}}</option>{{end}}</select>
<div class="buttons">
<button class="primary" type="submit" name="outcome" value="connected" id="outcome-connected">Connect</button>
<button type="submit" name="outcome" value="pending" id="outcome-pending">Connect (assisted, pending)</button>
<button type="submit" name="outcome" value="error" id="outcome-error">Fail sign-in</button>
<button type="submit" name="outcome" value="cancel" id="outcome-cancel">Cancel</button>
</div>
</form>
</body></html>
`))

var outcomeTmpl = template.Must(template.New("outcome").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Finch Connect (simulator)</title><style>` + pageStyle + `</style></head>
<body><h1 id="outcome" data-outcome="{{.Outcome}}">{{.Title}}</h1><p>{{.Message}}</p>
{{if eq .Outcome "error"}}<p><a href="{{.Retry}}">Try again</a></p>{{end}}</body></html>
`))
