// Package finchsim is an in-memory Finch (Connect sessions, code exchange, introspection,
// disconnect, entity disconnect, sandbox connection status, account.updated webhooks) served over real HTTP in
// Finch's wire format. Tests, the local demo and the benchmarks run the operator against it.
//
// It follows Finch's Connection & Session ID Migration Guide: the same customer_id refreshes and
// returns the same session_id until the customer has a connection, after which
// POST /connect/sessions answers 400 connection_already_exists; reauthentication sessions are new
// on every call; completing reauth issues a new token for the same connection_id and revokes the
// old ones; a disconnected connection never comes back.
//
// Besides the Finch endpoints it serves the Connect page (GET /authorize?session=<id>: a page
// where a person picks the provider, authentication method and outcome; scripts and ?auto=1
// complete the session at once, acting as the employer's browser) and driver/inspection
// endpoints under /_sim/. docs/simulator.md describes them; pkg/finchtest runs it next to an
// in-process operator.
//
// It is as strict as Finch's docs and SDKs justify: a code must be exchanged with exactly its
// session's redirect_uri, or none (RFC 6749 §4.1.3); error bodies use the names of Finch's error
// table; the per-app and (opt-in) per-IP rate limits answer finch_application_rl and
// finch_api_ip_rl. Options reproduce documented oddities a client must survive: /introspect
// without a top-level connection_status (the Migration Guide's example), multi-entity
// connections, session responses without connect_url, 409s and undocumented bodies.
//
// It deliberately does not import internal/finch: it is an independent implementation of the wire
// format, so it cross-checks the client.
package finchsim

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configures a Sim.
type Options struct {
	// Clock is the simulator's notion of now (session/code expiry, rate-limit window, webhook
	// timestamps). Default time.Now.
	Clock func() time.Time
	// ConnectBaseURL is the base of connect_url. Default: the server's own URL (after Start), or
	// the request's Host when the Handler is mounted elsewhere.
	ConnectBaseURL string
	// Logf, if set, receives diagnostic messages.
	Logf func(format string, args ...any)
	// IPRateLimit is the per-source-IP limit (off unless Enabled; SetIPRateLimit changes it).
	IPRateLimit IPRateLimit
	// InitialSync makes the simulator send the initial data sync webhooks after a connection's
	// first code exchange (off unless Enabled; SetInitialSync changes it).
	InitialSync InitialSync
}

// InitialSync configures the job.initial_data_sync_org.succeeded and
// job.initial_data_sync_payroll.succeeded webhooks (finch-api-node 9.6.0
// src/resources/webhooks.ts JobCompletionEvent, data {job_id, job_url}): "Emitted when automated
// data sync jobs succeed for the first time" (developer.tryfinch.com/developer-resources/Webhooks),
// after Finch's initial sync that starts when the employer connects
// (developer.tryfinch.com/developer-resources/Data-Syncs). Finch documents neither the timing nor
// which syncs a connection gets: the simulator sends the organization one Delay after the
// connection's first code exchange when the connection has an Organization product (company,
// directory, individual, employment, ssn) or no Payroll product, and the payroll one another
// Delay later when it has a Payroll product (payment, pay_statement); once per connection.
type InitialSync struct {
	Enabled bool          `json:"enabled"`         // send the webhooks
	Delay   time.Duration `json:"delay,omitempty"` // after the first exchange, and between the two; nanoseconds in JSON
}

// IPRateLimit is Finch's per-IP limit: at most Requests Finch API requests from one source IP in
// any rolling Window; the request that exceeds it starts a Penalty during which every request
// from that IP is answered 429 rate_limit_exceeded_error / finch_api_ip_rl. Finch documents
// 1,000 requests per 5 minutes and a 60-minute penalty (finch-docs Rate-Limits.md, docs/finch-api.md);
// zero fields take those figures. The Connect page and /_sim/ are not counted.
type IPRateLimit struct {
	Enabled  bool          `json:"enabled"`            // enforce the limit
	Requests int           `json:"requests,omitempty"` // per Window (0: DefaultIPRequests)
	Window   time.Duration `json:"window,omitempty"`   // rolling window (0: DefaultIPWindow); nanoseconds in JSON
	Penalty  time.Duration `json:"penalty,omitempty"`  // refusal after exceeding it (0: DefaultIPPenalty); nanoseconds in JSON
	// NoRetryAfter leaves Retry-After off the penalty's 429s. Finch documents no Retry-After
	// (docs/finch-api.md#rate-limits: no source either way), so a client must cope without one.
	NoRetryAfter bool `json:"no_retry_after,omitempty"`
}

// Finch's documented per-IP figures (finch-docs docs/Development-Guides/Rate-Limits.md).
const (
	DefaultIPRequests = 1000
	DefaultIPWindow   = 5 * time.Minute
	DefaultIPPenalty  = 60 * time.Minute
)

func (l IPRateLimit) withDefaults() IPRateLimit {
	if l.Requests <= 0 {
		l.Requests = DefaultIPRequests
	}
	if l.Window <= 0 {
		l.Window = DefaultIPWindow
	}
	if l.Penalty <= 0 {
		l.Penalty = DefaultIPPenalty
	}
	return l
}

// Values of AppConfig.ReauthURLField and SessionURLField: which field of a session response
// carries the Connect link. Finch's SDKs and API reference have connect_url (required); the
// others exist to exercise a client's fallback.
const (
	URLFieldConnectURL = "connect_url" // default: {"session_id", "connect_url"}
	URLFieldURL        = "url"         // {"session_id", "url"}
	URLFieldNone       = "none"        // {"session_id"} only
)

// AppConfig registers one Finch application.
type AppConfig struct {
	ClientID      string    `json:"client_id"`                // the app's client_id (Basic auth user, /auth/token body)
	ClientSecret  string    `json:"client_secret"`            // its client_secret
	WebhookURL    string    `json:"webhook_url,omitempty"`    // where its webhooks are POSTed ("": none)
	WebhookSecret string    `json:"webhook_secret,omitempty"` // standard base64; the decoded bytes are the HMAC key
	RateLimit     RateLimit `json:"rate_limit"`               // per-endpoint limit (zero: unlimited)
	// OmitTopLevelStatus answers GET /introspect without a top-level connection_status, in the
	// shape of the Connection & Session ID Migration Guide's example (client_id, client_type,
	// connection_type, company_id, account_id, connection_id, products, username,
	// payroll_provider_id, manual, authentication_methods[{type, connection_status{status,
	// message}}]), plus entities for a multi-entity connection.
	OmitTopLevelStatus bool `json:"omit_top_level_status,omitempty"`
	// ReauthURLField and SessionURLField pick the link field of POST
	// /connect/sessions/reauthenticate and POST /connect/sessions responses (URLField*; "" is
	// connect_url).
	ReauthURLField  string `json:"reauth_url_field,omitempty"`  // POST /connect/sessions/reauthenticate
	SessionURLField string `json:"session_url_field,omitempty"` // POST /connect/sessions
}

// RateLimit is a sliding-window limit: at most Requests admitted requests in any rolling Window,
// per app and endpoint. Zero Requests or Window means unlimited.
type RateLimit struct {
	Requests int           `json:"requests"` // admitted per Window
	Window   time.Duration `json:"window"`   // nanoseconds in JSON
}

// Completion describes how the employer completes a Connect session.
type Completion struct {
	Provider   string // default: the session's integration.provider, else "gusto"
	AuthMethod string // default: the session's integration.auth_method, else "credential"
	Status     string // initial connection status, default "connected"
	// Entities, if set, makes a connect session's connection multi-entity: the employer connected
	// these entities (empty IDs are generated; an empty Status takes the connection's). The token
	// response's entity_ids and /introspect's entities list them.
	Entities []EntityInfo
}

// EntityInfo is one entity of a multi-entity connection, as /introspect's entities[] shows it
// (finch-api-go account.go IntrospectionEntity: id, name|null, source_id|null, status).
type EntityInfo struct {
	ID       string `json:"id"`                  // Finch's entity_id
	Name     string `json:"name,omitempty"`      // display name
	SourceID string `json:"source_id,omitempty"` // the provider's ID
	Status   string `json:"status"`              // connection status of the entity ("connected", "disconnected"...)
}

// Fault is injected into the next matching requests of an endpoint.
type Fault struct {
	Count          int           // how many requests it affects; -1 = until cleared; 0 is treated as 1
	Status         int           // respond with this HTTP status and a Finch error body; the operation does not happen
	RetryAfter     time.Duration // Retry-After header (seconds, rounded up) on Status responses
	Latency        time.Duration // sleep before handling
	CommitThenDrop bool          // perform the operation, then close the connection without a response
	// With Status: Name and FinchCode override the error body's name and finch_code (defaults by
	// status, see errorNameForStatus); Body, if set, is sent verbatim instead of a Finch error
	// body (an undocumented or non-JSON answer); XShouldRetry sets the x-should-retry header
	// ("true"/"false") that the SDKs obey.
	Name, FinchCode string
	Body            string // verbatim body (see above)
	XShouldRetry    string // x-should-retry header (see above)
	// Token, if set, limits the fault to requests authenticated with that access token;
	// ConnectionID to requests with a token of that connection (Finch can fail one connection
	// while it answers others: a revoked connection "can sometimes be returned as 500 -
	// server_error", developer.tryfinch.com/api-reference/development-guides/errors/Error-Handling).
	Token, ConnectionID string
}

// SessionInfo is a snapshot of a Connect session.
type SessionInfo struct {
	ID           string    `json:"id"`                      // session_id
	ClientID     string    `json:"client_id"`               // the app that created it
	CustomerID   string    `json:"customer_id"`             // customer_id it was created for
	CustomerName string    `json:"customer_name"`           // customer_name it was created with
	Kind         string    `json:"kind"`                    // "connect" | "reauthenticate"
	ConnectionID string    `json:"connection_id,omitempty"` // the connection it created or re-arms
	RedirectURI  string    `json:"redirect_uri,omitempty"`  // redirect_uri it was created with
	Products     []string  `json:"products"`                // products it asks for
	CreatedAt    time.Time `json:"created_at"`              // creation time
	ExpiresAt    time.Time `json:"expires_at"`              // expiry (minutes_to_expire after the last refresh)
	Completed    bool      `json:"completed"`               // the employer completed it
	// Extensions beyond the agreed API.
	CustomerEmail string         `json:"customer_email,omitempty"` // customer_email it was created with
	Sandbox       string         `json:"sandbox,omitempty"`        // sandbox it was created with ("finch", "provider")
	Recordkeeping *Recordkeeping `json:"recordkeeping,omitempty"`  // recordkeeping it was created with
	Refreshes     int            `json:"refreshes"`                // how many times POST /connect/sessions re-armed it
	RefreshedAt   time.Time      `json:"refreshed_at,omitzero"`    // last refresh
}

// Recordkeeping is a session's recordkeeping configuration, as POST /connect/sessions took it.
type Recordkeeping struct {
	Recordkeeper string `json:"recordkeeper"`      // the recordkeeper's ID
	PlanID       string `json:"plan_id,omitempty"` // the plan's ID
}

// ConnectionInfo is a snapshot of a connection.
type ConnectionInfo struct {
	ID           string    `json:"id"`           // connection_id
	ClientID     string    `json:"client_id"`    // the app it belongs to
	CustomerID   string    `json:"customer_id"`  // the customer it belongs to
	ProviderID   string    `json:"provider_id"`  // the payroll provider chosen in Connect
	AuthMethod   string    `json:"auth_method"`  // the authentication method chosen in Connect
	Status       string    `json:"status"`       // connection status ("connected", "reauth", "pending"...)
	Products     []string  `json:"products"`     // products granted
	Tokens       int       `json:"tokens"`       // live (not revoked) tokens
	Disconnected bool      `json:"disconnected"` // POST /disconnect was called
	CreatedAt    time.Time `json:"created_at"`   // creation time
	// Entities of a multi-entity connection (none for a single-entity one).
	Entities []EntityInfo `json:"entities,omitempty"`
	// Extensions beyond the agreed API.
	CustomerName   string `json:"customer_name"`   // the customer's name
	AccountID      string `json:"account_id"`      // account_id (changes on reauthentication)
	CompanyID      string `json:"company_id"`      // company_id
	ConnectionType string `json:"connection_type"` // "provider", or "finch" for a Finch sandbox
	// Calls counts the Finch API requests authenticated with a token of the connection, by
	// endpoint.
	Calls map[string]int `json:"calls,omitempty"`
}

// Errors returned by the employer driver and SetConnectionStatus.
var (
	ErrSessionNotFound        = errors.New("finchsim: session not found")
	ErrSessionExpired         = errors.New("finchsim: session expired")
	ErrSessionCompleted       = errors.New("finchsim: session already completed")
	ErrConnectionNotFound     = errors.New("finchsim: connection not found")
	ErrConnectionDisconnected = errors.New("finchsim: connection is disconnected")
	ErrInvalidStatus          = errors.New("finchsim: status must not be empty")
	ErrEntityNotFound         = errors.New("finchsim: entity not found")
)

const (
	kindConnect = "connect"
	kindReauth  = "reauthenticate"

	codeTTL = 10 * time.Minute
)

type app struct {
	cfg        AppConfig
	webhookKey []byte
}

type session struct {
	id, clientID                               string
	kind                                       string
	customerID, customerName, customerEmail    string
	connectionID                               string
	products                                   []string
	integrationProvider, integrationAuthMethod string
	manual                                     bool
	sandbox                                    string
	recordkeeping                              *Recordkeeping
	redirectURI                                string
	createdAt, expiresAt, refreshedAt          time.Time
	refreshes                                  int
	completed                                  bool
}

type connection struct {
	id, clientID                            string
	customerID, customerName, customerEmail string
	providerID, authMethod, status          string
	connectionType                          string
	manual                                  bool
	products                                []string
	accountID, companyID, entityID          string
	entities                                []*entity // multi-entity connections only; entityID is entities[0].id
	tokens                                  []*token
	disconnected                            bool
	createdAt, lastSync                     time.Time
	lastSyncRaw                             string // SetLastSuccessfulSync: sent verbatim instead of lastSync
	initialSyncSent                         bool   // the initial sync webhooks are scheduled
}

type entity struct {
	id, name, sourceID, status string
}

func (e *entity) info() EntityInfo {
	return EntityInfo{ID: e.id, Name: e.name, SourceID: e.sourceID, Status: e.status}
}

type token struct {
	value, id, connectionID, clientID string
	revoked                           bool
}

type authCode struct {
	clientID, sessionID, connectionID, redirectURI string
	reauth                                         bool
	expiresAt                                      time.Time
	used                                           bool
}

type faultEntry struct {
	endpoint string
	f        Fault
}

type custKey struct{ clientID, customerID string }

// Sim is an in-memory Finch. All methods are safe for concurrent use.
type Sim struct {
	opts Options

	mu              sync.Mutex
	apps            map[string]*app
	rateLimits      map[string]RateLimit
	arrivals        map[string][]time.Time // clientID + " " + endpoint -> admitted arrivals in window
	sessions        map[string]*session
	connectSessions map[custKey]string // the one connect session per app+customer
	connections     map[string]*connection
	liveConn        map[custKey]string // live (not disconnected) connection per app+customer
	tokens          map[string]*token
	codes           map[string]*authCode
	faults          []*faultEntry
	ipLimit         IPRateLimit
	ipArrivals      map[string][]time.Time // source IP -> arrivals in window
	ipPenalty       map[string]time.Time   // source IP -> end of its penalty
	calls           map[string]int
	connCalls       map[string]map[string]int // connection ID -> endpoint -> requests with its tokens
	responses       map[string]map[int]int
	initialSync     InitialSync

	webhookDeliveries, webhookAttempts, webhookFailures int
	webhooksInflight                                    int

	srv       *http.Server
	url       string
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	hc        *http.Client
	simMux    *http.ServeMux
}

// New returns a Sim with no apps registered.
func New(opts Options) *Sim {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	opts.ConnectBaseURL = strings.TrimRight(opts.ConnectBaseURL, "/")
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sim{
		opts:            opts,
		apps:            map[string]*app{},
		rateLimits:      map[string]RateLimit{},
		arrivals:        map[string][]time.Time{},
		sessions:        map[string]*session{},
		connectSessions: map[custKey]string{},
		connections:     map[string]*connection{},
		liveConn:        map[custKey]string{},
		tokens:          map[string]*token{},
		codes:           map[string]*authCode{},
		ipLimit:         opts.IPRateLimit,
		ipArrivals:      map[string][]time.Time{},
		ipPenalty:       map[string]time.Time{},
		calls:           map[string]int{},
		connCalls:       map[string]map[string]int{},
		responses:       map[string]map[int]int{},
		initialSync:     opts.InitialSync,
		ctx:             ctx,
		cancel:          cancel,
		hc:              &http.Client{Timeout: 5 * time.Second},
	}
	s.simMux = s.newSimMux()
	return s
}

func (s *Sim) now() time.Time { return s.opts.Clock() }

func (s *Sim) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// Handler returns the simulator's HTTP handler (Finch API, /authorize and /_sim/).
func (s *Sim) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Start serves the simulator on 127.0.0.1 with an ephemeral port and returns its base URL
// (like httptest.NewServer). It panics if it cannot listen or was already started.
func (s *Sim) Start() (baseURL string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("finchsim: listen: " + err.Error())
	}
	return s.serve(l)
}

func (s *Sim) serve(l net.Listener) string {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	if s.srv != nil {
		s.mu.Unlock()
		_ = l.Close()
		panic("finchsim: already started")
	}
	s.srv = srv
	s.url = "http://" + l.Addr().String()
	u := s.url
	s.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
	return u
}

// URL is the base URL recorded by Start ("" before Start).
func (s *Sim) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Close stops the server started by Start (dropping open connections) and cancels pending
// webhook deliveries. It is safe to call more than once, and without Start.
func (s *Sim) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		srv := s.srv
		s.mu.Unlock()
		if srv != nil {
			_ = srv.Close()
		}
		s.cancel()
		s.WaitWebhooks(10 * time.Second)
	})
}

// AddApp registers (or replaces the configuration of) an application.
func (s *Sim) AddApp(cfg AppConfig) {
	key, err := base64.StdEncoding.DecodeString(cfg.WebhookSecret)
	if err != nil {
		s.logf("finchsim: app %s: webhook secret is not standard base64 (%v); signing with its raw bytes", cfg.ClientID, err)
		key = []byte(cfg.WebhookSecret)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[cfg.ClientID] = &app{cfg: cfg, webhookKey: key}
	s.rateLimits[cfg.ClientID] = cfg.RateLimit
}

// SetRateLimit changes an app's rate limit. Arrivals already admitted keep counting.
func (s *Sim) SetRateLimit(clientID string, rl RateLimit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateLimits[clientID] = rl
	if a := s.apps[clientID]; a != nil {
		a.cfg.RateLimit = rl
	}
}

// SetIPRateLimit changes the per-source-IP limit. Disabling it also lifts running penalties and
// forgets counted arrivals; changing an enabled limit keeps them.
func (s *Sim) SetIPRateLimit(l IPRateLimit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ipLimit = l
	if !l.Enabled {
		s.ipArrivals = map[string][]time.Time{}
		s.ipPenalty = map[string]time.Time{}
	}
}

// IPPenaltyUntil is when the per-IP penalty of a source IP (e.g. "127.0.0.1") ends; the zero time
// when it has none.
func (s *Sim) IPPenaltyUntil(ip string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.ipPenalty[ip]; s.now().Before(u) {
		return u
	}
	return time.Time{}
}

// SetWebhookURL changes where an app's webhooks go ("" disables them).
func (s *Sim) SetWebhookURL(clientID, url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[clientID]; a != nil {
		a.cfg.WebhookURL = url
	}
}

// InjectFault queues a fault for an endpoint ("POST /connect/sessions", ... or "*" for every
// Finch API endpoint). Faults are consumed in the order they were injected: a request takes the
// first queued fault that matches it and has requests left.
func (s *Sim) InjectFault(endpoint string, f Fault) {
	if f.Count == 0 {
		f.Count = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &faultEntry{endpoint: endpoint, f: f})
}

// ClearFaults removes all queued faults.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Calls is the number of requests received for an endpoint, whatever their outcome.
func (s *Sim) Calls(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[endpoint]
}

// CallCounts returns requests received per endpoint.
func (s *Sim) CallCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

// Responses is how many responses with that HTTP status an endpoint sent. Requests dropped by
// CommitThenDrop are counted under status 0.
func (s *Sim) Responses(endpoint string, status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.responses[endpoint][status]
}

// ResponseCounts returns endpoint -> status -> count.
func (s *Sim) ResponseCounts() map[string]map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[int]int, len(s.responses))
	for k, m := range s.responses {
		c := make(map[int]int, len(m))
		for st, n := range m {
			c[st] = n
		}
		out[k] = c
	}
	return out
}

// ResetCounters zeroes call, response and webhook counters (not state).
func (s *Sim) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
	s.connCalls = map[string]map[string]int{}
	s.responses = map[string]map[int]int{}
	s.webhookDeliveries, s.webhookAttempts, s.webhookFailures = 0, 0, 0
}

// Sessions returns all sessions, oldest first.
func (s *Sim) Sessions() []SessionInfo {
	s.mu.Lock()
	out := make([]SessionInfo, 0, len(s.sessions))
	for _, se := range s.sessions {
		out = append(out, se.info())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Connections returns all connections (including disconnected ones), oldest first.
func (s *Sim) Connections() []ConnectionInfo {
	s.mu.Lock()
	out := make([]ConnectionInfo, 0, len(s.connections))
	for _, c := range s.connections {
		out = append(out, s.connInfoLocked(c))
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Session returns one session.
func (s *Sim) Session(id string) (SessionInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.sessions[id]
	if se == nil {
		return SessionInfo{}, false
	}
	return se.info(), true
}

// Connection returns one connection.
func (s *Sim) Connection(id string) (ConnectionInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.connections[id]
	if c == nil {
		return ConnectionInfo{}, false
	}
	return s.connInfoLocked(c), true
}

// ConnectionCalls is the number of requests to an endpoint authenticated with a token of the
// connection, whatever their outcome.
func (s *Sim) ConnectionCalls(connectionID, endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connCalls[connectionID][endpoint]
}

func (s *Sim) connInfoLocked(c *connection) ConnectionInfo {
	ci := c.info()
	if m := s.connCalls[c.id]; len(m) > 0 {
		ci.Calls = make(map[string]int, len(m))
		for k, v := range m {
			ci.Calls[k] = v
		}
	}
	return ci
}

// countCallLocked counts a request to endpoint: in total, and for the connection of its bearer
// token if it has one.
func (s *Sim) countCallLocked(endpoint, bearer string) {
	s.calls[endpoint]++
	if t := s.tokens[bearer]; t != nil {
		m := s.connCalls[t.connectionID]
		if m == nil {
			m = map[string]int{}
			s.connCalls[t.connectionID] = m
		}
		m[endpoint]++
	}
}

// SetInitialSync changes when the initial data sync webhooks are sent (see InitialSync). It
// applies to connections whose first code exchange comes after the change.
func (s *Sim) SetInitialSync(is InitialSync) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initialSync = is
}

// WebhookDeliveries is the number of webhooks delivered successfully (2xx from the receiver).
func (s *Sim) WebhookDeliveries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhookDeliveries
}

// WebhookAttempts is the number of webhook POSTs made, including failed ones and retries.
func (s *Sim) WebhookAttempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhookAttempts
}

// WebhookFailures is the number of webhooks given up on after all retries.
func (s *Sim) WebhookFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhookFailures
}

// WaitWebhooks waits until no webhook delivery is in flight (including retries), up to timeout.
// It reports whether that happened.
func (s *Sim) WaitWebhooks(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		n := s.webhooksInflight
		s.mu.Unlock()
		if n == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (se *session) info() SessionInfo {
	return SessionInfo{
		ID: se.id, ClientID: se.clientID, CustomerID: se.customerID, CustomerName: se.customerName,
		Kind: se.kind, ConnectionID: se.connectionID, RedirectURI: se.redirectURI,
		Products: cloneStrings(se.products), CreatedAt: se.createdAt, ExpiresAt: se.expiresAt,
		Completed: se.completed, CustomerEmail: se.customerEmail, Sandbox: se.sandbox,
		Recordkeeping: se.recordkeeping, Refreshes: se.refreshes, RefreshedAt: se.refreshedAt,
	}
}

func (c *connection) liveTokens() int {
	n := 0
	for _, t := range c.tokens {
		if !t.revoked {
			n++
		}
	}
	return n
}

func (c *connection) info() ConnectionInfo {
	return ConnectionInfo{
		ID: c.id, ClientID: c.clientID, CustomerID: c.customerID, ProviderID: c.providerID,
		AuthMethod: c.authMethod, Status: c.status, Products: cloneStrings(c.products),
		Tokens: c.liveTokens(), Disconnected: c.disconnected, CreatedAt: c.createdAt,
		CustomerName: c.customerName, AccountID: c.accountID, CompanyID: c.companyID,
		ConnectionType: c.connectionType, Entities: c.entityInfos(),
	}
}

func (c *connection) entityInfos() []EntityInfo {
	if len(c.entities) == 0 {
		return nil
	}
	out := make([]EntityInfo, len(c.entities))
	for i, e := range c.entities {
		out[i] = e.info()
	}
	return out
}

// entityIDs is the token response's entity_ids.
func (c *connection) entityIDs() []string {
	if len(c.entities) == 0 {
		return []string{c.entityID}
	}
	out := make([]string, len(c.entities))
	for i, e := range c.entities {
		out[i] = e.id
	}
	return out
}

func (c *connection) revokeTokens() {
	for _, t := range c.tokens {
		t.revoked = true
	}
}
