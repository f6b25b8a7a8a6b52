package finchsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// CompleteSession completes a session as the employer would in Finch Connect and returns the
// authorization code (single use, valid 10 minutes, bound to the app, session and redirect_uri).
//
// A connect session creates a connection for its customer (or reuses the customer's live one).
// A reauthenticate session re-arms its connection (status back to c.Status, default
// "connected"; the provider and auth method stay locked to the connection's, and account_id
// changes as the guide says it may); exchanging its code revokes the connection's older tokens.
func (s *Sim) CompleteSession(sessionID string, c Completion) (code string, err error) {
	code, _, err = s.complete(sessionID, c)
	return code, err
}

func (s *Sim) complete(sessionID string, c Completion) (code, redirectURI string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.sessions[sessionID]
	if se == nil {
		return "", "", ErrSessionNotFound
	}
	if se.completed {
		return "", "", ErrSessionCompleted
	}
	now := s.now()
	if !now.Before(se.expiresAt) {
		return "", "", ErrSessionExpired
	}
	status := c.Status
	if status == "" {
		status = "connected"
	}

	var conn *connection
	switch se.kind {
	case kindReauth:
		conn = s.connections[se.connectionID]
		if conn == nil {
			return "", "", ErrConnectionNotFound
		}
		if conn.disconnected {
			return "", "", ErrConnectionDisconnected
		}
		conn.accountID = newUUID()
		conn.products = cloneStrings(se.products)
		// The employer may bring removed entities back (or add new ones): "a reauthentication
		// session" re-adds a disconnected entity (developer.tryfinch.com
		// /implementation-guide/Backend-Application/Disconnect-Connections).
		for _, e := range c.Entities {
			conn.readdEntity(e, status)
		}
	default:
		key := custKey{se.clientID, se.customerID}
		if id, ok := s.liveConn[key]; ok {
			conn = s.connections[id]
		} else {
			provider := firstNonEmpty(c.Provider, se.integrationProvider, "gusto")
			method := firstNonEmpty(c.AuthMethod, se.integrationAuthMethod, "credential")
			connType := "provider"
			if se.sandbox == "finch" {
				connType = "finch"
			}
			conn = &connection{
				id: newUUID(), clientID: se.clientID, customerID: se.customerID,
				providerID: provider, authMethod: method, connectionType: connType, manual: se.manual,
				accountID: newUUID(), companyID: newUUID(), entityID: newUUID(), createdAt: now,
			}
			for _, e := range c.Entities {
				conn.entities = append(conn.entities, newEntity(e, status))
			}
			if len(conn.entities) > 0 {
				conn.entityID = conn.entities[0].id
			}
			s.connections[conn.id] = conn
			s.liveConn[key] = conn.id
		}
		conn.customerName, conn.customerEmail = se.customerName, se.customerEmail
		conn.products = cloneStrings(se.products)
		se.connectionID = conn.id
	}
	conn.status = status
	if status == "connected" {
		conn.lastSync = now
	}
	se.completed = true

	// Codes are UUIDs, like the docs' examples (finch-docs Redirect-to-Connect.md:
	// "code=90abecb6-e7ab-4b85-864a-e1c8bf67f2ad"); clients must treat them as opaque strings
	// (finch-connect-sdk src/types.ts SuccessEvent.code: string).
	code = newUUID()
	s.codes[code] = &authCode{
		clientID: se.clientID, sessionID: se.id, connectionID: conn.id, redirectURI: se.redirectURI,
		reauth: se.kind == kindReauth, expiresAt: now.Add(codeTTL),
	}
	return code, se.redirectURI, nil
}

func firstNonEmpty(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}

// SetConnectionStatus flips a connection's status (as PUT /sandbox/connections/accounts does)
// and delivers a signed account.updated webhook if the app has a WebhookURL.
func (s *Sim) SetConnectionStatus(connectionID, status string) error {
	if status == "" {
		return ErrInvalidStatus
	}
	s.mu.Lock()
	c, err := s.liveConnectionLocked(connectionID)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	job := s.setStatusLocked(c, status)
	s.mu.Unlock()
	s.dispatch(job)
	return nil
}

// liveConnectionLocked is a connection that exists and is not disconnected.
func (s *Sim) liveConnectionLocked(id string) (*connection, error) {
	c := s.connections[id]
	switch {
	case c == nil:
		return nil, ErrConnectionNotFound
	case c.disconnected:
		return nil, ErrConnectionDisconnected
	}
	return c, nil
}

func newEntity(e EntityInfo, defaultStatus string) *entity {
	id := e.ID
	if id == "" {
		id = newUUID()
	}
	st := e.Status
	if st == "" {
		st = defaultStatus
	}
	return &entity{id: id, name: e.Name, sourceID: e.SourceID, status: st}
}

// AddEntities adds entities to a connection, as an employer connecting more accounts of a
// multi-entity provider would (empty IDs are generated; an empty Status takes the connection's).
// A single-entity connection becomes multi-entity, its original entity first. It returns all the
// connection's entities. Tokens exchanged afterwards list them in entity_ids.
func (s *Sim) AddEntities(connectionID string, entities ...EntityInfo) ([]EntityInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.liveConnectionLocked(connectionID)
	if err != nil {
		return nil, err
	}
	if len(c.entities) == 0 {
		c.entities = []*entity{{id: c.entityID, status: c.status}}
	}
	for _, e := range entities {
		c.entities = append(c.entities, newEntity(e, c.status))
	}
	return c.entityInfos(), nil
}

// readdEntity puts an entity the employer selected in a reauthentication back on the connection:
// an existing one (removed or not) takes its new status, an unknown one is added.
func (c *connection) readdEntity(e EntityInfo, defaultStatus string) {
	if len(c.entities) == 0 {
		c.entities = []*entity{{id: c.entityID, status: c.status}}
	}
	for _, x := range c.entities {
		if e.ID != "" && x.id == e.ID {
			x.status = firstNonEmpty(e.Status, defaultStatus)
			return
		}
	}
	c.entities = append(c.entities, newEntity(e, defaultStatus))
}

// DisconnectEntities removes entities from a connection as POST /disconnect-entity does (see
// handleDisconnectEntity), for callers that do not hold the connection's token.
func (s *Sim) DisconnectEntities(connectionID string, entityIDs ...string) error {
	s.mu.Lock()
	c, err := s.liveConnectionLocked(connectionID)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	jobs, msg := s.disconnectEntitiesLocked(c, entityIDs)
	s.mu.Unlock()
	if msg != "" {
		return fmt.Errorf("finchsim: %s", msg)
	}
	for _, j := range jobs {
		s.dispatch(j)
	}
	return nil
}

// SetEntityStatus sets one entity's status (entities[].status adds "disconnected" to the
// connection statuses, finch-api-go account.go IntrospectionEntitiesStatus) and delivers a signed
// account.updated webhook carrying entity_id (finch-api-go webhook.go BaseWebhookEvent.EntityID:
// "Unique Finch id of the entity for which data has been updated"). The connection's own status
// is not changed.
func (s *Sim) SetEntityStatus(connectionID, entityID, status string) error {
	if status == "" {
		return ErrInvalidStatus
	}
	s.mu.Lock()
	c, err := s.liveConnectionLocked(connectionID)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	var e *entity
	for _, x := range c.entities {
		if x.id == entityID {
			e = x
		}
	}
	if e == nil {
		s.mu.Unlock()
		return ErrEntityNotFound
	}
	e.status = status
	job := s.entityUpdatedLocked(c, e)
	s.mu.Unlock()
	s.dispatch(job)
	return nil
}

// SetLastSuccessfulSync makes /introspect report value verbatim as last_successful_sync (top
// level and per authentication method) instead of the time of the last sync; "" goes back to
// the time. The SDKs type the field "date-time or any string" (finch-api-node
// src/resources/account.ts; finch-api-go account.go ...LastSuccessfulSyncUnion), so a client
// must take a value that is not a timestamp.
func (s *Sim) SetLastSuccessfulSync(connectionID, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.liveConnectionLocked(connectionID)
	if err != nil {
		return err
	}
	c.lastSyncRaw = value
	return nil
}

func driverErrorStatus(err error) int {
	switch {
	case errors.Is(err, ErrSessionNotFound), errors.Is(err, ErrConnectionNotFound), errors.Is(err, ErrEntityNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrSessionExpired):
		return http.StatusGone
	case errors.Is(err, ErrSessionCompleted), errors.Is(err, ErrConnectionDisconnected):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

func writeDriverError(w http.ResponseWriter, r *http.Request, err error) {
	status := driverErrorStatus(err)
	msg := strings.TrimPrefix(err.Error(), "finchsim: ")
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		fmt.Fprintf(w, "<!doctype html><title>Finch Connect (simulator)</title><h1>%d %s</h1><p>%s</p>\n",
			status, http.StatusText(status), html.EscapeString(msg))
		return
	}
	name, _ := errorNameForStatus(status)
	if status == http.StatusGone {
		name = "session_expired"
	}
	writeError(w, status, name, "", msg, nil)
}

// handleAuthorize is the Connect page: GET /authorize?session=<id>[&state=][&provider=][&auth_method=][&status=]
// [&outcome=][&auto=1]. A browser (Accept: text/html) without auto=1 gets the page for a person
// (connectpage.go), whose buttons come back here with auto=1 and an outcome. Otherwise it acts
// as the employer's browser completing Connect at once. With a redirect_uri on the session it
// answers 302 to redirect_uri?code=..[&state=..]; otherwise (or with app_type=spa, as the
// embedded SDK's iframe sends) it answers 200 {"code": ..., "state": ...}, what onSuccess gets.
//
// state is passed through as given on the Connect URL: the embedded SDK appends it to the
// session URL (finch-connect-sdk src/utils.ts constructAuthUrl: searchParams.append('state')) and
// hands it back in onSuccess (src/types.ts SuccessEvent.state); the docs list it as "included as
// a query parameter in the response back to your application" (developer.tryfinch.com
// /implementation-guide/Connect/Set-Up-Finch-Connect) and, for the redirect, "If the redirect to
// Finch Connect contains a state parameter, the same parameter will be returned here"
// (finch-docs Redirect-to-Connect.md, static-URL era). No source shows a session-based redirect
// carrying it, so a callback should use it as a hint, not require it.
func (s *Sim) handleAuthorize(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	id := q.Get("session")
	if id == "" {
		badRequest(w, "missing session query parameter")
		return
	}
	if wantsConnectPage(r) {
		s.serveConnectPage(w, r, id)
		return
	}
	c := Completion{Provider: q.Get("provider"), AuthMethod: q.Get("auth_method"), Status: q.Get("status")}
	switch outcome := q.Get("outcome"); outcome {
	case "", OutcomeConnected:
	case OutcomePending:
		c.Status = "pending"
		if c.AuthMethod == "" {
			c.AuthMethod = "assisted"
		}
	case OutcomeError, OutcomeCancel:
		if se, ok := s.Session(id); !ok || se.Completed {
			writeDriverError(w, r, map[bool]error{false: ErrSessionNotFound, true: ErrSessionCompleted}[ok])
			return
		}
		retry := url.Values{"session": {id}}
		for _, k := range []string{"state", "app_type"} {
			if v := q.Get(k); v != "" {
				retry.Set(k, v)
			}
		}
		serveOutcomePage(w, outcome, "authorize?"+retry.Encode())
		return
	default:
		badRequest(w, "outcome must be one of connected, pending, error, cancel")
		return
	}
	code, redirectURI, err := s.complete(id, c)
	if err != nil {
		writeDriverError(w, r, err)
		return
	}
	state := q.Get("state")
	if redirectURI != "" && q.Get("app_type") != "spa" {
		params := url.Values{"code": {code}}
		if state != "" {
			params.Set("state", state)
		}
		w.Header().Set("Location", appendQuery(redirectURI, params.Encode()))
		w.WriteHeader(http.StatusFound)
		return
	}
	resp := map[string]string{"code": code}
	if state != "" {
		resp["state"] = state
	}
	writeJSON(w, http.StatusOK, resp)
}

// appendQuery adds an encoded query to a URI, keeping its existing query and fragment verbatim.
func appendQuery(uri, query string) string {
	frag := ""
	if i := strings.IndexByte(uri, '#'); i >= 0 {
		uri, frag = uri[:i], uri[i:]
	}
	switch {
	case !strings.Contains(uri, "?"):
		uri += "?" + query
	case strings.HasSuffix(uri, "?") || strings.HasSuffix(uri, "&"):
		uri += query
	default:
		uri += "&" + query
	}
	return uri + frag
}

// --- /_sim/ driver and inspection endpoints ---

func (s *Sim) newSimMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("POST /_sim/sessions/{id}/complete", s.simComplete)
	m.HandleFunc("GET /_sim/sessions/{id}", s.simGetSession)
	m.HandleFunc("GET /_sim/connections/{id}", s.simGetConnection)
	m.HandleFunc("POST /_sim/connections/{id}/status", s.simSetStatus)
	m.HandleFunc("POST /_sim/connections/{id}/entities", s.simAddEntities)
	m.HandleFunc("POST /_sim/connections/{id}/entities/{entity}/status", s.simSetEntityStatus)
	m.HandleFunc("POST /_sim/connections/{id}/last-sync", s.simSetLastSync)
	m.HandleFunc("POST /_sim/initial-sync", s.simSetInitialSync)
	m.HandleFunc("POST /_sim/ip-limit", s.simSetIPLimit)
	m.HandleFunc("DELETE /_sim/ip-limit", func(w http.ResponseWriter, r *http.Request) {
		s.SetIPRateLimit(IPRateLimit{})
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("GET /_sim/state", s.simState)
	m.HandleFunc("GET /_sim/calls", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.CallCounts()) })
	m.HandleFunc("GET /_sim/responses", s.simResponses)
	m.HandleFunc("DELETE /_sim/calls", func(w http.ResponseWriter, r *http.Request) {
		s.ResetCounters()
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("POST /_sim/faults", s.simAddFault)
	m.HandleFunc("DELETE /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("POST /_sim/apps", s.simAddApp)
	m.HandleFunc("/_sim/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found_error", "", "no simulator route for "+r.Method+" "+r.URL.Path, nil)
	})
	return m
}

func decodeOptional(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func (s *Sim) simComplete(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Provider   string `json:"provider"`
		AuthMethod string `json:"auth_method"`
		Status     string `json:"status"`
	}
	if err := decodeOptional(r, &req); err != nil {
		badRequest(w, "invalid JSON body: "+err.Error())
		return
	}
	code, err := s.CompleteSession(r.PathValue("id"), Completion{Provider: req.Provider, AuthMethod: req.AuthMethod, Status: req.Status})
	if err != nil {
		writeDriverError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"code": code})
}

func (s *Sim) simGetSession(w http.ResponseWriter, r *http.Request) {
	if se, ok := s.Session(r.PathValue("id")); ok {
		writeJSON(w, http.StatusOK, se)
		return
	}
	writeDriverError(w, r, ErrSessionNotFound)
}

func (s *Sim) simGetConnection(w http.ResponseWriter, r *http.Request) {
	if c, ok := s.Connection(r.PathValue("id")); ok {
		writeJSON(w, http.StatusOK, c)
		return
	}
	writeDriverError(w, r, ErrConnectionNotFound)
}

func (s *Sim) simSetStatus(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Status string `json:"status"`
	}
	if err := decodeOptional(r, &req); err != nil {
		badRequest(w, "invalid JSON body: "+err.Error())
		return
	}
	id := r.PathValue("id")
	if err := s.SetConnectionStatus(id, req.Status); err != nil {
		writeDriverError(w, r, err)
		return
	}
	c, _ := s.Connection(id)
	writeJSON(w, http.StatusOK, c)
}

func (s *Sim) simAddEntities(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Entities []EntityInfo `json:"entities"`
	}
	if err := decodeOptional(r, &req); err != nil {
		badRequest(w, "invalid JSON body: "+err.Error())
		return
	}
	if len(req.Entities) == 0 {
		badRequest(w, `entities is required (e.g. {"entities":[{"name":"Acme East","status":"connected"}]})`)
		return
	}
	all, err := s.AddEntities(r.PathValue("id"), req.Entities...)
	if err != nil {
		writeDriverError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entities": all})
}

func (s *Sim) simSetEntityStatus(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Status string `json:"status"`
	}
	if err := decodeOptional(r, &req); err != nil {
		badRequest(w, "invalid JSON body: "+err.Error())
		return
	}
	id, eid := r.PathValue("id"), r.PathValue("entity")
	if err := s.SetEntityStatus(id, eid, req.Status); err != nil {
		writeDriverError(w, r, err)
		return
	}
	c, _ := s.Connection(id)
	for _, e := range c.Entities {
		if e.ID == eid {
			writeJSON(w, http.StatusOK, e)
			return
		}
	}
	writeDriverError(w, r, ErrEntityNotFound)
}

func (s *Sim) simSetLastSync(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Value string `json:"value"`
	}
	if err := decodeOptional(r, &req); err != nil {
		badRequest(w, "invalid JSON body: "+err.Error())
		return
	}
	id := r.PathValue("id")
	if err := s.SetLastSuccessfulSync(id, req.Value); err != nil {
		writeDriverError(w, r, err)
		return
	}
	c, _ := s.Connection(id)
	writeJSON(w, http.StatusOK, c)
}

// simSetInitialSync: {"enabled": true, "delay": "30s"} (enabled defaults to true).
func (s *Sim) simSetInitialSync(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Enabled *bool        `json:"enabled"`
		Delay   jsonDuration `json:"delay"`
	}
	if err := decodeOptional(r, &req); err != nil {
		badRequest(w, "invalid JSON body: "+err.Error())
		return
	}
	is := InitialSync{Enabled: req.Enabled == nil || *req.Enabled, Delay: time.Duration(req.Delay)}
	s.SetInitialSync(is)
	writeJSON(w, http.StatusOK, is)
}

func (s *Sim) simSetIPLimit(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Requests     int          `json:"requests"`
		Window       jsonDuration `json:"window"`
		Penalty      jsonDuration `json:"penalty"`
		NoRetryAfter bool         `json:"no_retry_after"`
	}
	if err := decodeOptional(r, &req); err != nil {
		badRequest(w, "invalid JSON body: "+err.Error())
		return
	}
	l := IPRateLimit{Enabled: true, Requests: req.Requests, Window: time.Duration(req.Window),
		Penalty: time.Duration(req.Penalty), NoRetryAfter: req.NoRetryAfter}
	s.SetIPRateLimit(l)
	writeJSON(w, http.StatusOK, l.withDefaults())
}

func (s *Sim) simState(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"sessions": s.Sessions(), "connections": s.Connections()})
}

func (s *Sim) simResponses(w http.ResponseWriter, r *http.Request) {
	out := map[string]map[string]int{}
	for ep, m := range s.ResponseCounts() {
		c := map[string]int{}
		for st, n := range m {
			c[fmt.Sprint(st)] = n
		}
		out[ep] = c
	}
	writeJSON(w, http.StatusOK, out)
}

// jsonDuration accepts a Go duration string ("250ms", "2s") or a number of seconds.
type jsonDuration time.Duration

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		v, err := time.ParseDuration(str)
		if err != nil {
			return err
		}
		*d = jsonDuration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration must be a string like \"1.5s\" or a number of seconds")
	}
	*d = jsonDuration(secs * float64(time.Second))
	return nil
}

func (s *Sim) simAddFault(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Endpoint       string       `json:"endpoint"`
		Count          *int         `json:"count"`
		Status         int          `json:"status"`
		RetryAfter     jsonDuration `json:"retry_after"`
		Latency        jsonDuration `json:"latency"`
		CommitThenDrop bool         `json:"commit_then_drop"`
		Name           string       `json:"name"`
		FinchCode      string       `json:"finch_code"`
		Body           string       `json:"body"`
		XShouldRetry   string       `json:"x_should_retry"`
		Token          string       `json:"token"`
		ConnectionID   string       `json:"connection_id"`
	}
	if err := decodeOptional(r, &req); err != nil {
		badRequest(w, "invalid JSON body: "+err.Error())
		return
	}
	if req.Endpoint == "" {
		badRequest(w, `endpoint is required (e.g. "POST /connect/sessions" or "*")`)
		return
	}
	f := Fault{Count: 1, Status: req.Status, RetryAfter: time.Duration(req.RetryAfter), Latency: time.Duration(req.Latency), CommitThenDrop: req.CommitThenDrop,
		Name: req.Name, FinchCode: req.FinchCode, Body: req.Body, XShouldRetry: req.XShouldRetry,
		Token: req.Token, ConnectionID: req.ConnectionID}
	if req.Count != nil {
		f.Count = *req.Count
	}
	s.InjectFault(req.Endpoint, f)
	writeJSON(w, http.StatusCreated, map[string]any{"endpoint": req.Endpoint, "count": f.Count})
}

func (s *Sim) simAddApp(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ClientID      string `json:"client_id"`
		ClientSecret  string `json:"client_secret"`
		WebhookURL    string `json:"webhook_url"`
		WebhookSecret string `json:"webhook_secret"`
		RateLimit     struct {
			Requests int          `json:"requests"`
			Window   jsonDuration `json:"window"`
		} `json:"rate_limit"`
		OmitTopLevelStatus bool   `json:"omit_top_level_status"`
		ReauthURLField     string `json:"reauth_url_field"`
		SessionURLField    string `json:"session_url_field"`
	}
	if err := decodeOptional(r, &req); err != nil {
		badRequest(w, "invalid JSON body: "+err.Error())
		return
	}
	if req.ClientID == "" || req.ClientSecret == "" {
		badRequest(w, "client_id and client_secret are required")
		return
	}
	for _, f := range []string{req.ReauthURLField, req.SessionURLField} {
		if f != "" && f != URLFieldConnectURL && f != URLFieldURL && f != URLFieldNone {
			badRequest(w, "reauth_url_field and session_url_field must be one of connect_url, url, none")
			return
		}
	}
	s.AddApp(AppConfig{
		ClientID: req.ClientID, ClientSecret: req.ClientSecret, WebhookURL: req.WebhookURL, WebhookSecret: req.WebhookSecret,
		RateLimit:          RateLimit{Requests: req.RateLimit.Requests, Window: time.Duration(req.RateLimit.Window)},
		OmitTopLevelStatus: req.OmitTopLevelStatus, ReauthURLField: req.ReauthURLField, SessionURLField: req.SessionURLField,
	})
	writeJSON(w, http.StatusCreated, map[string]string{"client_id": req.ClientID})
}
