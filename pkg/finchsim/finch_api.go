package finchsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// KnownProducts are the product names POST /connect/sessions accepts.
var KnownProducts = []string{
	"benefits", "company", "deduction", "directory", "documents", "employment", "individual",
	"payment", "pay_statement", "plans", "plans_dependents", "plans_enrollments", "recordkeeping", "ssn",
}

// ConnectionStatuses are the statuses PUT /sandbox/connections/accounts accepts.
var ConnectionStatuses = []string{"pending", "processing", "connected", "error_no_account_setup", "error_permissions", "reauth"}

var (
	knownProducts = toSet(KnownProducts)
	authMethods   = toSet([]string{"assisted", "credential", "oauth", "api_token"})
	sandboxModes  = toSet([]string{"finch", "provider"})
	statusSet     = toSet(ConnectionStatuses)
)

func toSet(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

const (
	defaultConnectMinutes = 129600
	defaultReauthMinutes  = 43200
	maxMinutes            = 129600
)

var statusMessages = map[string]string{
	"connected":              "This employer is working as expected",
	"pending":                "This employer has created a token, and we are waiting for access to its provider",
	"processing":             "Finch is processing this employer's data",
	"reauth":                 "This employer needs to reauthenticate",
	"error_permissions":      "The employer's provider account lacks the permissions required for the requested products",
	"error_no_account_setup": "The employer has not finished setting up their provider account",
	"disconnected":           "This connection has been disconnected",
}

// connectBase is the base of connect_url.
func (s *Sim) connectBase(r *http.Request) string {
	if s.opts.ConnectBaseURL != "" {
		return s.opts.ConnectBaseURL
	}
	s.mu.Lock()
	u := s.url
	s.mu.Unlock()
	if u != "" {
		return u
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Sim) connectURL(r *http.Request, sessionID string) string {
	return s.connectBase(r) + "/authorize?session=" + url.QueryEscape(sessionID)
}

type sessionResponse struct {
	SessionID  string `json:"session_id"`
	ConnectURL string `json:"connect_url"`
}

// writeSession answers a session endpoint with 201 {session_id, connect_url} (finch-api-node
// src/resources/connect/sessions.ts; API reference new-session / reauthenticate-session: 201),
// or with the link under the field the app's configuration picks (URLField*).
func (s *Sim) writeSession(w http.ResponseWriter, r *http.Request, field, id string) {
	link := s.connectURL(r, id)
	switch field {
	case URLFieldURL:
		writeJSON(w, http.StatusCreated, map[string]string{"session_id": id, "url": link})
	case URLFieldNone:
		writeJSON(w, http.StatusCreated, map[string]string{"session_id": id})
	default:
		writeJSON(w, http.StatusCreated, sessionResponse{SessionID: id, ConnectURL: link})
	}
}

func (s *Sim) appConfig(clientID string) AppConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[clientID]; a != nil {
		return a.cfg
	}
	return AppConfig{}
}

type createSessionReq struct {
	CustomerID    *string  `json:"customer_id"`
	CustomerName  *string  `json:"customer_name"`
	CustomerEmail *string  `json:"customer_email"`
	Products      []string `json:"products"`
	Integration   *struct {
		Provider   *string `json:"provider"`
		AuthMethod *string `json:"auth_method"`
	} `json:"integration"`
	Manual          *bool           `json:"manual"`
	MinutesToExpire *float64        `json:"minutes_to_expire"`
	RedirectURI     *string         `json:"redirect_uri"`
	Sandbox         json.RawMessage `json:"sandbox"`
	Recordkeeping   json.RawMessage `json:"recordkeeping"`
}

// recordkeepers are SessionNewParams.Recordkeeping.recordkeeper's values (finch-api-node 10.8.0
// src/resources/connect/sessions.ts).
var recordkeepers = toSet([]string{"voya", "empower", "fidelity", "transamerica"})

// checkRecordkeeping validates recordkeeping as finch-api-node 10.8.0
// src/resources/connect/sessions.ts types it: null, or {recordkeeper: voya|empower|fidelity|
// transamerica (required), plan_id?: string|null}, and only "when the `recordkeeping` product is
// requested". It returns nil for absent or null.
func checkRecordkeeping(raw json.RawMessage, products []string) (*Recordkeeping, string) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, ""
	}
	var w struct {
		Recordkeeper *string `json:"recordkeeper"`
		PlanID       *string `json:"plan_id"`
	}
	if raw[0] != '{' || json.Unmarshal(raw, &w) != nil {
		return nil, "recordkeeping must be an object {recordkeeper, plan_id?}"
	}
	if w.Recordkeeper == nil || !recordkeepers[*w.Recordkeeper] {
		return nil, "recordkeeping.recordkeeper must be one of voya, empower, fidelity, transamerica"
	}
	hasProduct := false
	for _, p := range products {
		hasProduct = hasProduct || p == "recordkeeping"
	}
	if !hasProduct {
		return nil, "recordkeeping can only be provided when the recordkeeping product is requested"
	}
	rk := &Recordkeeping{Recordkeeper: *w.Recordkeeper}
	if w.PlanID != nil {
		rk.PlanID = *w.PlanID
	}
	return rk, ""
}

func checkLen(field string, v *string) string {
	if v == nil {
		return field + " is required"
	}
	if n := utf8.RuneCountInString(*v); n < 1 || n > 255 {
		return field + " must be between 1 and 255 characters"
	}
	return ""
}

func checkProducts(ps []string, required bool) string {
	if ps == nil && !required {
		return ""
	}
	if ps == nil {
		return "products is required"
	}
	if len(ps) == 0 {
		return "products must contain at least one product"
	}
	for _, p := range ps {
		if !knownProducts[p] {
			return fmt.Sprintf("products contains an unknown product: %q", p)
		}
	}
	return ""
}

func checkMinutes(v *float64, def float64) (float64, string) {
	if v == nil {
		return def, ""
	}
	if *v < 1 || *v > maxMinutes {
		return 0, fmt.Sprintf("minutes_to_expire must be between 1 and %d", maxMinutes)
	}
	return *v, ""
}

func checkRedirectURI(v *string) (string, string) {
	if v == nil {
		return "", ""
	}
	u, err := url.Parse(*v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "redirect_uri must be an absolute http(s) URI"
	}
	return *v, ""
}

func minutesDuration(m float64) time.Duration { return time.Duration(m * float64(time.Minute)) }

func (s *Sim) handleCreateSession(w http.ResponseWriter, r *http.Request, body []byte) {
	if !checkVersion(w, r) {
		return
	}
	clientID, ok := s.basicApp(w, r)
	if !ok {
		return
	}
	var req createSessionReq
	if err := decodeJSON(body, &req); err != nil {
		badRequest(w, err.Error())
		return
	}
	if msg := checkLen("customer_id", req.CustomerID); msg != "" {
		badRequest(w, msg)
		return
	}
	if msg := checkLen("customer_name", req.CustomerName); msg != "" {
		badRequest(w, msg)
		return
	}
	if msg := checkProducts(req.Products, true); msg != "" {
		badRequest(w, msg)
		return
	}
	email := ""
	if req.CustomerEmail != nil {
		if a, err := mail.ParseAddress(*req.CustomerEmail); err != nil || a.Address != *req.CustomerEmail {
			badRequest(w, "customer_email must be a valid email address")
			return
		}
		email = *req.CustomerEmail
	}
	var provider, authMethod string
	if req.Integration != nil {
		if req.Integration.Provider == nil || *req.Integration.Provider == "" {
			badRequest(w, "integration.provider is required when integration is set")
			return
		}
		provider = *req.Integration.Provider
		if req.Integration.AuthMethod != nil {
			if !authMethods[*req.Integration.AuthMethod] {
				badRequest(w, "integration.auth_method must be one of assisted, credential, oauth, api_token")
				return
			}
			authMethod = *req.Integration.AuthMethod
		}
	}
	minutes, msg := checkMinutes(req.MinutesToExpire, defaultConnectMinutes)
	if msg != "" {
		badRequest(w, msg)
		return
	}
	redirectURI, msg := checkRedirectURI(req.RedirectURI)
	if msg != "" {
		badRequest(w, msg)
		return
	}
	sandbox := ""
	if raw := bytes.TrimSpace(req.Sandbox); len(raw) > 0 && string(raw) != "null" && string(raw) != "false" {
		// false is accepted as "not a sandbox session" (the migration guide's example sends it).
		if err := json.Unmarshal(raw, &sandbox); err != nil || !sandboxModes[sandbox] {
			badRequest(w, "sandbox must be one of finch, provider")
			return
		}
	}
	recordkeeping, msg := checkRecordkeeping(req.Recordkeeping, req.Products)
	if msg != "" {
		badRequest(w, msg)
		return
	}
	manual := req.Manual != nil && *req.Manual

	s.mu.Lock()
	now := s.now()
	key := custKey{clientID, *req.CustomerID}
	if connID, exists := s.liveConn[key]; exists {
		s.mu.Unlock()
		// Body exactly as the Connection & Session ID Migration Guide shows it (code 400,
		// finch_code connection_already_exists, name bad_request, context {customer_id,
		// connection_id}), minus its trailing comma.
		writeError(w, http.StatusBadRequest, "bad_request", "connection_already_exists",
			"There's an existing connection for the customer_id: "+*req.CustomerID+". Please use the /connect/sessions/reauthenticate endpoint instead.",
			struct {
				CustomerID   string `json:"customer_id"`
				ConnectionID string `json:"connection_id"`
			}{*req.CustomerID, connID})
		return
	}
	se := s.sessions[s.connectSessions[key]]
	if se == nil {
		se = &session{id: newUUID(), clientID: clientID, kind: kindConnect, customerID: *req.CustomerID, createdAt: now}
		s.sessions[se.id] = se
		s.connectSessions[key] = se.id
	} else {
		// Not connected yet: refresh the same session with the new parameters and expiry
		// (even if it had expired or its connection was disconnected).
		se.refreshes++
		se.refreshedAt = now
		se.completed = false
		se.connectionID = ""
	}
	se.customerName = *req.CustomerName
	se.customerEmail = email
	se.products = cloneStrings(req.Products)
	se.integrationProvider, se.integrationAuthMethod = provider, authMethod
	se.manual = manual
	se.sandbox = sandbox
	se.recordkeeping = recordkeeping
	se.redirectURI = redirectURI
	se.expiresAt = now.Add(minutesDuration(minutes))
	id := se.id
	s.mu.Unlock()

	s.writeSession(w, r, s.appConfig(clientID).SessionURLField, id)
}

type reauthReq struct {
	ConnectionID    *string  `json:"connection_id"`
	MinutesToExpire *float64 `json:"minutes_to_expire"`
	Products        []string `json:"products"`
	RedirectURI     *string  `json:"redirect_uri"`
}

func (s *Sim) handleReauthSession(w http.ResponseWriter, r *http.Request, body []byte) {
	if !checkVersion(w, r) {
		return
	}
	clientID, ok := s.basicApp(w, r)
	if !ok {
		return
	}
	var req reauthReq
	if err := decodeJSON(body, &req); err != nil {
		badRequest(w, err.Error())
		return
	}
	if req.ConnectionID == nil || *req.ConnectionID == "" {
		badRequest(w, "connection_id is required")
		return
	}
	if msg := checkProducts(req.Products, false); msg != "" {
		badRequest(w, msg)
		return
	}
	minutes, msg := checkMinutes(req.MinutesToExpire, defaultReauthMinutes)
	if msg != "" {
		badRequest(w, msg)
		return
	}
	redirectURI, msg := checkRedirectURI(req.RedirectURI)
	if msg != "" {
		badRequest(w, msg)
		return
	}

	s.mu.Lock()
	c := s.connections[*req.ConnectionID]
	if c == nil || c.clientID != clientID {
		s.mu.Unlock()
		// Finch documents no error for an unknown connection_id: simulator choice, in the
		// documented body shape (Error-Types), as a terminal 4xx.
		writeError(w, http.StatusNotFound, "bad_request", "connection_not_found",
			"No connection found for connection_id: "+*req.ConnectionID, map[string]string{"connection_id": *req.ConnectionID})
		return
	}
	if c.disconnected {
		s.mu.Unlock()
		// Disconnect-Tokens: a disconnected connection cannot be reactivated. The error is not
		// documented: simulator choice, as a terminal 4xx.
		writeError(w, http.StatusBadRequest, "bad_request", "connection_disconnected",
			"The connection "+c.id+" has been disconnected and cannot be reauthenticated. Create a new connect session instead.",
			map[string]string{"connection_id": c.id})
		return
	}
	now := s.now()
	products := req.Products
	if products == nil {
		products = c.products
	}
	se := &session{
		id: newUUID(), clientID: clientID, kind: kindReauth, connectionID: c.id,
		customerID: c.customerID, customerName: c.customerName, customerEmail: c.customerEmail,
		products: cloneStrings(products), integrationProvider: c.providerID, integrationAuthMethod: c.authMethod,
		manual: c.manual, redirectURI: redirectURI, createdAt: now, expiresAt: now.Add(minutesDuration(minutes)),
	}
	if c.connectionType == "finch" {
		se.sandbox = "finch"
	}
	s.sessions[se.id] = se
	s.mu.Unlock()

	s.writeSession(w, r, s.appConfig(clientID).ReauthURLField, se.id)
}

type tokenReq struct {
	ClientID     string  `json:"client_id"`
	ClientSecret string  `json:"client_secret"`
	Code         string  `json:"code"`
	RedirectURI  *string `json:"redirect_uri"`
}

type tokenResponse struct {
	AccessToken    string   `json:"access_token"`
	TokenType      string   `json:"token_type"`
	ConnectionID   string   `json:"connection_id"`
	ClientType     string   `json:"client_type"`
	ConnectionType string   `json:"connection_type"`
	EntityIDs      []string `json:"entity_ids"`
	Products       []string `json:"products"`
	ProviderID     string   `json:"provider_id"`
	AccountID      string   `json:"account_id"`
	CompanyID      string   `json:"company_id"`
	CustomerID     any      `json:"customer_id"`
	CustomerName   any      `json:"customer_name"`
}

// invalidGrant: developer.tryfinch.com /api-reference/development-guides/errors/Error-Types,
// 400 invalid_grant_error ("bad authorization code"); RFC 6749 §5.2 also gives invalid_grant for
// a redirect_uri that does not match the authorization request's.
func invalidGrant(w http.ResponseWriter, msg string) {
	writeError(w, http.StatusBadRequest, "invalid_grant_error", "", msg, nil)
}

func (s *Sim) handleToken(w http.ResponseWriter, r *http.Request, body []byte) {
	if !checkVersion(w, r) {
		return
	}
	var req tokenReq
	if err := decodeJSON(body, &req); err != nil {
		badRequest(w, err.Error())
		return
	}
	if req.ClientID == "" && req.ClientSecret == "" {
		// Tolerate SDKs that send the credentials as Basic auth as well / instead.
		if u, p, ok := r.BasicAuth(); ok {
			req.ClientID, req.ClientSecret = u, p
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.appByCredentialsLocked(req.ClientID, req.ClientSecret); err != nil {
		invalidClient(w)
		return
	}
	if req.Code == "" {
		badRequest(w, "code is required")
		return
	}
	ac := s.codes[req.Code]
	switch {
	case ac == nil || ac.clientID != req.ClientID:
		invalidGrant(w, "The authorization code is invalid")
		return
	case ac.used:
		invalidGrant(w, "The authorization code has already been used")
		return
	case !s.now().Before(ac.expiresAt):
		invalidGrant(w, "The authorization code has expired")
		return
	}
	// redirect_uri binds the code to its session, strictly: RFC 6749 §4.1.3 (required, and
	// identical, when the authorization request had one); Retrieve-Access-Token (include it only
	// for the redirect flow, "the same redirect URI you used"; never for the embedded flow);
	// finch-demo-nextjs pages/api/finch/callback.tsx ("embedded Finch Connect flow will fail if
	// redirect_uri is included"). An empty value counts as absent (RFC 6749 §3.1). A mismatch
	// does not burn the code.
	sent := ""
	if req.RedirectURI != nil {
		sent = *req.RedirectURI
	}
	switch {
	case ac.redirectURI == "" && sent != "":
		invalidGrant(w, "redirect_uri must not be sent: the session was created without one (embedded flow)")
		return
	case ac.redirectURI != "" && sent == "":
		invalidGrant(w, "redirect_uri is required: the session was created with one (redirect flow); send the same value")
		return
	case sent != ac.redirectURI:
		invalidGrant(w, "redirect_uri does not match the one the session was created with")
		return
	}
	c := s.connections[ac.connectionID]
	if c == nil || c.disconnected {
		invalidGrant(w, "The authorization code is invalid: its connection has been disconnected")
		return
	}
	ac.used = true
	if ac.reauth {
		c.revokeTokens()
	}
	t := &token{value: newUUID(), id: newUUID(), connectionID: c.id, clientID: c.clientID}
	s.tokens[t.value] = t
	c.tokens = append(c.tokens, t)
	for _, job := range s.initialSyncJobsLocked(c) {
		s.dispatch(job)
	}
	writeJSON(w, http.StatusOK, tokenResponse{
		AccessToken: t.value, TokenType: "bearer", ConnectionID: c.id, ClientType: "sandbox",
		ConnectionType: c.connectionType, EntityIDs: c.entityIDs(), Products: cloneStrings(c.products),
		ProviderID: c.providerID, AccountID: c.accountID, CompanyID: c.companyID,
		CustomerID: nullable(c.customerID), CustomerName: nullable(c.customerName),
	})
}

type connStatus struct {
	Status             string `json:"status"`
	Message            string `json:"message,omitempty"`
	LastSuccessfulSync any    `json:"last_successful_sync,omitempty"`
}

type authMethodInfo struct {
	Type             string     `json:"type"`
	ConnectionStatus connStatus `json:"connection_status"`
	Products         []string   `json:"products"`
}

type introspectResponse struct {
	ID                    string           `json:"id"`
	ClientID              string           `json:"client_id"`
	ClientType            string           `json:"client_type"`
	ConnectionID          string           `json:"connection_id"`
	ConnectionStatus      connStatus       `json:"connection_status"`
	ConnectionType        string           `json:"connection_type"`
	Products              []string         `json:"products"`
	ProviderID            string           `json:"provider_id"`
	PayrollProviderID     string           `json:"payroll_provider_id"`
	AccountID             string           `json:"account_id"`
	CompanyID             string           `json:"company_id"`
	CustomerID            any              `json:"customer_id"`
	CustomerName          any              `json:"customer_name"`
	CustomerEmail         any              `json:"customer_email"`
	Manual                bool             `json:"manual"`
	Username              string           `json:"username"`
	AuthenticationMethods []authMethodInfo `json:"authentication_methods"`
	Entities              []entityWire     `json:"entities,omitempty"`
}

// entityWire is one of /introspect's entities[] (finch-api-go account.go IntrospectionEntity:
// id, name nullable, source_id nullable, status).
type entityWire struct {
	ID       string `json:"id"`
	Name     any    `json:"name"`
	SourceID any    `json:"source_id"`
	Status   string `json:"status"`
}

// guideIntrospection is /introspect in the Migration Guide's example shape, field for field and
// in its order: no id, provider_id, customer_* and, above all, no top-level connection_status.
type guideIntrospection struct {
	ClientID              string            `json:"client_id"`
	ClientType            string            `json:"client_type"`
	ConnectionType        string            `json:"connection_type"`
	CompanyID             string            `json:"company_id"`
	AccountID             string            `json:"account_id"`
	ConnectionID          string            `json:"connection_id"`
	Products              []string          `json:"products"`
	Username              string            `json:"username"`
	PayrollProviderID     string            `json:"payroll_provider_id"`
	Manual                bool              `json:"manual"`
	AuthenticationMethods []guideAuthMethod `json:"authentication_methods"`
	Entities              []entityWire      `json:"entities,omitempty"`
}

type guideAuthMethod struct {
	Type             string `json:"type"`
	ConnectionStatus struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	} `json:"connection_status"`
}

func (c *connection) entitiesWire() []entityWire {
	if len(c.entities) == 0 {
		return nil
	}
	out := make([]entityWire, len(c.entities))
	for i, e := range c.entities {
		out[i] = entityWire{ID: e.id, Name: nullable(e.name), SourceID: nullable(e.sourceID), Status: e.status}
	}
	return out
}

func (s *Sim) handleIntrospect(w http.ResponseWriter, r *http.Request, _ []byte) {
	if !checkVersion(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, c, ok := s.tokenLocked(w, r)
	if !ok {
		return
	}
	username := "admin@" + strings.ReplaceAll(c.providerID, "_", "-") + ".sim.example"
	if a := s.apps[c.clientID]; a != nil && a.cfg.OmitTopLevelStatus {
		m := guideAuthMethod{Type: c.authMethod}
		m.ConnectionStatus.Status, m.ConnectionStatus.Message = c.status, statusMessages[c.status]
		writeJSON(w, http.StatusOK, guideIntrospection{
			ClientID: c.clientID, ClientType: "sandbox", ConnectionType: c.connectionType, CompanyID: c.companyID,
			AccountID: c.accountID, ConnectionID: c.id, Products: cloneStrings(c.products), Username: username,
			PayrollProviderID: c.providerID, Manual: c.manual, AuthenticationMethods: []guideAuthMethod{m},
			Entities: c.entitiesWire(),
		})
		return
	}
	lastSync := c.lastSyncWire()
	st := connStatus{Status: c.status, Message: statusMessages[c.status], LastSuccessfulSync: lastSync}
	writeJSON(w, http.StatusOK, introspectResponse{
		ID: t.id, ClientID: c.clientID, ClientType: "sandbox", ConnectionID: c.id, ConnectionStatus: st,
		ConnectionType: c.connectionType, Products: cloneStrings(c.products), ProviderID: c.providerID,
		PayrollProviderID: c.providerID, AccountID: c.accountID, CompanyID: c.companyID,
		CustomerID: nullable(c.customerID), CustomerName: nullable(c.customerName), CustomerEmail: nullable(c.customerEmail),
		Manual: c.manual, Username: username,
		AuthenticationMethods: []authMethodInfo{{
			Type:             c.authMethod,
			ConnectionStatus: connStatus{Status: c.status, Message: statusMessages[c.status], LastSuccessfulSync: lastSync},
			Products:         cloneStrings(c.products),
		}},
		Entities: c.entitiesWire(),
	})
}

// lastSyncWire is last_successful_sync: a date-time, or the string SetLastSuccessfulSync set
// (finch-api-node src/resources/account.ts types it "(string & {}) | string | null": any string),
// or null before the first sync.
func (c *connection) lastSyncWire() any {
	switch {
	case c.lastSyncRaw != "":
		return c.lastSyncRaw
	case c.lastSync.IsZero():
		return nil
	}
	return c.lastSync.UTC().Format(time.RFC3339)
}

func (s *Sim) handleDisconnect(w http.ResponseWriter, r *http.Request, _ []byte) {
	if !checkVersion(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, c, ok := s.tokenLocked(w, r)
	if !ok {
		return
	}
	s.disconnectLocked(c)
	writeJSON(w, http.StatusOK, map[string]string{"status": "success"})
}

func (s *Sim) disconnectLocked(c *connection) {
	c.revokeTokens()
	c.disconnected = true
	c.status = "disconnected"
	// Disconnect-Tokens: /disconnect disconnects every token and entity of the connection.
	for _, e := range c.entities {
		e.status = "disconnected"
	}
	key := custKey{c.clientID, c.customerID}
	if s.liveConn[key] == c.id {
		delete(s.liveConn, key)
	}
}

// handleDisconnectEntity is POST /disconnect-entity (finch-api-node src/resources/account.ts
// disconnectEntity, finch-api-go account.go DisconnectEntity): Bearer auth, body {entity_ids:
// uuid[], at least one}, answer {"status": "success"}. "Disconnection is scoped to the
// entity_id(s) provided in the request body. The entity(s) must belong to the connection
// associated with the access_token used to call this endpoint. All other entities linked to the
// same connection remain active and unaffected" (developer.tryfinch.com
// /api-reference/management/disconnect-entity); "All other entities remain active and the access
// token stays valid", with an account.updated webhook for each removed entity
// (/implementation-guide/Backend-Application/Disconnect-Connections). The token and the
// connection's status are untouched.
//
// Undocumented, chosen strictly: the request is all or nothing; an ID that is not a UUID or not an
// entity of the token's connection, or one that would leave no entity (the docs send that case to
// POST /disconnect), answers 400 bad_request / invalid_request (Error-Types' validation pair) and
// changes nothing. An entity already removed is accepted again without a second webhook.
func (s *Sim) handleDisconnectEntity(w http.ResponseWriter, r *http.Request, body []byte) {
	if !checkVersion(w, r) {
		return
	}
	var req struct {
		EntityIDs []string `json:"entity_ids"`
	}
	if err := decodeJSON(body, &req); err != nil {
		badRequest(w, err.Error())
		return
	}
	if len(req.EntityIDs) == 0 {
		badRequest(w, "entity_ids must contain at least one entity ID")
		return
	}
	s.mu.Lock()
	_, c, ok := s.tokenLocked(w, r)
	if !ok {
		s.mu.Unlock()
		return
	}
	jobs, msg := s.disconnectEntitiesLocked(c, req.EntityIDs)
	s.mu.Unlock()
	if msg != "" {
		badRequest(w, msg)
		return
	}
	for _, j := range jobs {
		s.dispatch(j)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "success"})
}

// disconnectEntitiesLocked removes entities of c (see handleDisconnectEntity) and prepares one
// account.updated webhook per entity removed now. A non-empty message is a validation failure;
// nothing changed then.
func (s *Sim) disconnectEntitiesLocked(c *connection, ids []string) ([]*webhookJob, string) {
	byID := map[string]*entity{}
	for _, e := range c.entities {
		byID[e.id] = e
	}
	remove := map[string]bool{}
	for _, id := range ids {
		if !isUUID(id) {
			return nil, "entity_ids: " + strconv.Quote(id) + " is not a UUID"
		}
		if byID[id] == nil && id == c.entityID {
			return nil, "entity " + id + " is the connection's only entity: use POST /disconnect to disconnect the connection"
		}
		if byID[id] == nil {
			return nil, "entity " + id + " does not belong to the connection of this access token"
		}
		remove[id] = true
	}
	left := 0
	for _, e := range c.entities {
		if !remove[e.id] && e.status != "disconnected" {
			left++
		}
	}
	if left == 0 {
		return nil, "entity_ids would disconnect every entity of the connection: use POST /disconnect to disconnect the connection"
	}
	var jobs []*webhookJob
	for _, e := range c.entities {
		if remove[e.id] && e.status != "disconnected" {
			e.status = "disconnected"
			if j := s.entityUpdatedLocked(c, e); j != nil {
				jobs = append(jobs, j)
			}
		}
	}
	return jobs, ""
}

type sandboxAccountResponse struct {
	AccountID          string   `json:"account_id"`
	AuthenticationType string   `json:"authentication_type"`
	CompanyID          string   `json:"company_id"`
	ConnectionID       string   `json:"connection_id"`
	EntityID           string   `json:"entity_id"`
	Products           []string `json:"products"`
	ProviderID         string   `json:"provider_id"`
}

func (s *Sim) handleSandboxStatus(w http.ResponseWriter, r *http.Request, body []byte) {
	if !checkVersion(w, r) {
		return
	}
	var req struct {
		ConnectionStatus *string `json:"connection_status"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeJSON(body, &req); err != nil {
			badRequest(w, err.Error())
			return
		}
	}
	s.mu.Lock()
	_, c, ok := s.tokenLocked(w, r)
	if !ok {
		s.mu.Unlock()
		return
	}
	var job *webhookJob
	if req.ConnectionStatus != nil {
		if !statusSet[*req.ConnectionStatus] {
			s.mu.Unlock()
			badRequest(w, "connection_status must be one of "+strings.Join(ConnectionStatuses, ", "))
			return
		}
		job = s.setStatusLocked(c, *req.ConnectionStatus)
	}
	resp := sandboxAccountResponse{
		AccountID: c.accountID, AuthenticationType: c.authMethod, CompanyID: c.companyID, ConnectionID: c.id,
		EntityID: c.entityID, Products: cloneStrings(c.products), ProviderID: c.providerID,
	}
	s.mu.Unlock()
	s.dispatch(job)
	writeJSON(w, http.StatusOK, resp)
}

// setStatusLocked changes a connection's status and prepares its account.updated webhook.
func (s *Sim) setStatusLocked(c *connection, status string) *webhookJob {
	c.status = status
	if status == "connected" {
		c.lastSync = s.now()
	}
	return s.accountUpdatedLocked(c)
}
