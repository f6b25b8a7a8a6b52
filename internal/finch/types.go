package finch

import (
	"bytes"
	"encoding/json"
	"time"
)

// Endpoint keys: the metric "endpoint" label and the Budget key of each call.
const (
	EndpointCreateSession = "POST /connect/sessions"
	EndpointReauthSession = "POST /connect/sessions/reauthenticate"
	EndpointToken         = "POST /auth/token"
	EndpointIntrospect    = "GET /introspect"
	EndpointDisconnect    = "POST /disconnect"
	EndpointSandboxStatus = "PUT /sandbox/connections/accounts"
)

// Connection status values known at the time of writing. The API treats the
// status as an open enum: always keep unknown values verbatim.
const (
	StatusPending             = "pending"
	StatusProcessing          = "processing"
	StatusConnected           = "connected"
	StatusReauth              = "reauth"
	StatusErrorPermissions    = "error_permissions"
	StatusErrorNoAccountSetup = "error_no_account_setup"
	StatusDisconnected        = "disconnected"
)

// Webhook event types the operator acts on. Others decode as plain strings.
const (
	EventAccountUpdated = "account.updated"
	EventTest           = "test"
)

// SessionRequest is the body of POST /connect/sessions. Nil or empty optional
// fields are omitted on the wire (see MarshalJSON).
type SessionRequest struct {
	CustomerID      string       `json:"customer_id"`
	CustomerName    string       `json:"customer_name"`
	CustomerEmail   *string      `json:"customer_email,omitempty"`
	Products        []string     `json:"products"`
	Integration     *Integration `json:"integration,omitempty"`
	Manual          *bool        `json:"manual,omitempty"`
	MinutesToExpire *int         `json:"minutes_to_expire,omitempty"`
	RedirectURI     *string      `json:"redirect_uri,omitempty"`
	Sandbox         *string      `json:"sandbox,omitempty"`
	// Recordkeeping is sent only with the recordkeeping product (finch-api-node 10.8.0
	// src/resources/connect/sessions.ts SessionNewParams.recordkeeping: "Can only be provided
	// when the `recordkeeping` product is requested").
	Recordkeeping *Recordkeeping `json:"recordkeeping,omitempty"`
}

// Recordkeeping is SessionRequest.recordkeeping: {recordkeeper: voya|empower|fidelity|
// transamerica, plan_id?: string|null} (finch-api-node src/resources/connect/sessions.ts
// SessionNewParams.Recordkeeping).
type Recordkeeping struct {
	Recordkeeper string  `json:"recordkeeper"`
	PlanID       *string `json:"plan_id,omitempty"`
}

type recordkeepingWire struct {
	Recordkeeper string `json:"recordkeeper"`
	PlanID       string `json:"plan_id,omitempty"`
}

func (r *Recordkeeping) wire() *recordkeepingWire {
	if r == nil || r.Recordkeeper == "" {
		return nil
	}
	return &recordkeepingWire{Recordkeeper: r.Recordkeeper, PlanID: deref(r.PlanID)}
}

// Integration preselects a provider (and optionally an auth method) in
// Connect. An Integration without Provider is not sent.
type Integration struct {
	Provider   string  `json:"provider"`
	AuthMethod *string `json:"auth_method,omitempty"`
}

type integrationWire struct {
	Provider   string `json:"provider"`
	AuthMethod string `json:"auth_method,omitempty"`
}

func (i *Integration) wire() *integrationWire {
	if i == nil || i.Provider == "" {
		return nil
	}
	return &integrationWire{Provider: i.Provider, AuthMethod: deref(i.AuthMethod)}
}

type sessionWire struct {
	CustomerID      string             `json:"customer_id"`
	CustomerName    string             `json:"customer_name"`
	CustomerEmail   string             `json:"customer_email,omitempty"`
	Products        []string           `json:"products"`
	Integration     *integrationWire   `json:"integration,omitempty"`
	Manual          *bool              `json:"manual,omitempty"`
	MinutesToExpire *int               `json:"minutes_to_expire,omitempty"`
	RedirectURI     string             `json:"redirect_uri,omitempty"`
	Sandbox         string             `json:"sandbox,omitempty"`
	Recordkeeping   *recordkeepingWire `json:"recordkeeping,omitempty"`
}

// MarshalJSON writes the wire form: pointers to empty strings are omitted like
// nil ones (Finch rejects e.g. an empty redirect_uri), and products is always
// an array, never null.
func (r SessionRequest) MarshalJSON() ([]byte, error) {
	products := r.Products
	if products == nil {
		products = []string{}
	}
	return json.Marshal(sessionWire{
		CustomerID:      r.CustomerID,
		CustomerName:    r.CustomerName,
		CustomerEmail:   deref(r.CustomerEmail),
		Products:        products,
		Integration:     r.Integration.wire(),
		Manual:          r.Manual,
		MinutesToExpire: r.MinutesToExpire,
		RedirectURI:     deref(r.RedirectURI),
		Sandbox:         deref(r.Sandbox),
		Recordkeeping:   r.Recordkeeping.wire(),
	})
}

// ReauthRequest is the body of POST /connect/sessions/reauthenticate.
type ReauthRequest struct {
	ConnectionID    string   `json:"connection_id"`
	MinutesToExpire *int     `json:"minutes_to_expire,omitempty"`
	Products        []string `json:"products,omitempty"`
	RedirectURI     *string  `json:"redirect_uri,omitempty"`
}

type reauthWire struct {
	ConnectionID    string   `json:"connection_id"`
	MinutesToExpire *int     `json:"minutes_to_expire,omitempty"`
	Products        []string `json:"products,omitempty"`
	RedirectURI     string   `json:"redirect_uri,omitempty"`
}

// MarshalJSON writes the wire form, omitting nil and empty optionals.
func (r ReauthRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(reauthWire{
		ConnectionID:    r.ConnectionID,
		MinutesToExpire: r.MinutesToExpire,
		Products:        r.Products,
		RedirectURI:     deref(r.RedirectURI),
	})
}

// SessionResponse is returned by both session endpoints. Finch returns no
// expiry: compute it from the minutes_to_expire you sent.
//
// ConnectURL is never empty in a SessionResponse the Client returns: when the
// body has no connect_url the Client takes "url", else builds the documented
// link (see ConnectURLSource).
type SessionResponse struct {
	SessionID  string `json:"session_id"`
	ConnectURL string `json:"connect_url"`
	// ConnectURLSource says where ConnectURL came from: ConnectURLFromBody,
	// ConnectURLFromURLField or ConnectURLBuilt. It is not on the wire.
	ConnectURLSource string `json:"-"`

	altURL string // the body's "url", a fallback for a missing connect_url
}

// Values of SessionResponse.ConnectURLSource.
const (
	ConnectURLFromBody     = "connect_url" // the documented field
	ConnectURLFromURLField = "url"         // fallback: the body's "url"
	ConnectURLBuilt        = "built"       // fallback: <ConnectBaseURL>/authorize?session=<session_id>
)

// UnmarshalJSON decodes leniently (a field of an unexpected type is left
// empty) and keeps "url" as a fallback for a missing connect_url.
func (s *SessionResponse) UnmarshalJSON(b []byte) error {
	var w struct {
		SessionID  json.RawMessage `json:"session_id"`
		ConnectURL json.RawMessage `json:"connect_url"`
		URL        json.RawMessage `json:"url"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	s.SessionID = lenientString(w.SessionID)
	s.ConnectURL = lenientString(w.ConnectURL)
	s.altURL = lenientString(w.URL)
	return nil
}

// TokenRequest is the caller's part of POST /auth/token; the client adds its
// client_id and client_secret. RedirectURI must be empty for the embedded flow
// (the field is then omitted) and equal to the session's redirect_uri for the
// redirect flow.
type TokenRequest struct {
	Code        string `json:"code"`
	RedirectURI string `json:"redirect_uri,omitempty"`
}

type tokenWire struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	Code         string `json:"code"`
	RedirectURI  string `json:"redirect_uri,omitempty"`
}

// TokenResponse is the response of POST /auth/token. AccessToken is a secret:
// store it in a Secret only. String redacts it.
type TokenResponse struct {
	AccessToken    string   `json:"access_token"`
	TokenType      string   `json:"token_type"`
	ConnectionID   string   `json:"connection_id"`
	ClientType     string   `json:"client_type"`
	ConnectionType string   `json:"connection_type"`
	ProviderID     string   `json:"provider_id"`
	EntityIDs      []string `json:"entity_ids"`
	Products       []string `json:"products"`
	AccountID      string   `json:"account_id,omitempty"`
	CompanyID      string   `json:"company_id,omitempty"`
	CustomerID     string   `json:"customer_id,omitempty"`
	CustomerName   string   `json:"customer_name,omitempty"`
}

// String keeps the access token and customer fields out of accidental logs.
func (t TokenResponse) String() string {
	return "finch.TokenResponse{ConnectionID:" + t.ConnectionID + " ProviderID:" + t.ProviderID +
		" ClientType:" + t.ClientType + " AccessToken:[redacted]}"
}

// GoString is String for %#v.
func (t TokenResponse) GoString() string { return t.String() }

// ConnectionStatus is a connection's (or an authentication method's) health.
// Status is an open enum (see the Status* constants).
type ConnectionStatus struct {
	Status             string     `json:"status"`
	Message            string     `json:"message,omitempty"`
	LastSuccessfulSync *time.Time `json:"last_successful_sync,omitempty"`
	// LastSuccessfulSyncRaw is last_successful_sync verbatim when it is not a
	// date-time: the SDKs type it "date-time or any string" (finch-api-node
	// src/resources/account.ts `(string & {}) | string | null`; finch-api-go
	// account.go ...LastSuccessfulSyncUnion: UnionTime or string), so a
	// string is Finch's answer too. Not on the wire.
	LastSuccessfulSyncRaw string `json:"-"`
}

// UnmarshalJSON decodes leniently: an unexpected field type leaves that
// field empty instead of failing the whole introspection, a
// last_successful_sync that is not a date-time is kept verbatim in
// LastSuccessfulSyncRaw, and a bare string is taken as the status.
func (s *ConnectionStatus) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		s.Status = lenientString(b)
		return nil
	}
	var w struct {
		Status             json.RawMessage `json:"status"`
		Message            json.RawMessage `json:"message"`
		LastSuccessfulSync json.RawMessage `json:"last_successful_sync"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return nil // lenient by design: a broken status must not fail the whole response
	}
	s.Status = lenientString(w.Status)
	s.Message = lenientString(w.Message)
	s.LastSuccessfulSync = lenientTime(w.LastSuccessfulSync)
	if s.LastSuccessfulSync == nil {
		s.LastSuccessfulSyncRaw = lenientString(w.LastSuccessfulSync)
	}
	return nil
}

// AuthenticationMethod is one entry of Introspection.AuthenticationMethods.
type AuthenticationMethod struct {
	Type             string            `json:"type"`
	ConnectionStatus *ConnectionStatus `json:"connection_status,omitempty"`
	Products         []string          `json:"products,omitempty"`
}

// Entity is one entry of Introspection.Entities, for multi-entity
// connections (finch-api-go account.go IntrospectionEntity; finch-api-node
// src/resources/account.ts Introspection.Entity): {id, name|null,
// source_id|null, status}. Status adds "disconnected" to the connection
// status values and is kept verbatim.
type Entity struct {
	ID       string `json:"id"`
	Name     string `json:"name,omitempty"`
	SourceID string `json:"source_id,omitempty"`
	Status   string `json:"status"`
}

// UnmarshalJSON decodes leniently: null, or a value of an unexpected type,
// leaves that field "" instead of failing the whole introspection.
func (e *Entity) UnmarshalJSON(b []byte) error {
	var w struct {
		ID       json.RawMessage `json:"id"`
		Name     json.RawMessage `json:"name"`
		SourceID json.RawMessage `json:"source_id"`
		Status   json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(b), &w); err != nil {
		return nil // lenient by design, like ConnectionStatus
	}
	e.ID = lenientString(w.ID)
	e.Name = lenientString(w.Name)
	e.SourceID = lenientString(w.SourceID)
	e.Status = lenientString(w.Status)
	return nil
}

// Introspection is the response of GET /introspect. Read the connection's
// status with Status, not ConnectionStatus.Status: Finch may send the status
// only per authentication method (see Status).
type Introspection struct {
	ID                    string                 `json:"id"`
	ClientID              string                 `json:"client_id"`
	ClientType            string                 `json:"client_type"`
	ConnectionID          string                 `json:"connection_id"`
	ConnectionType        string                 `json:"connection_type"`
	ProviderID            string                 `json:"provider_id"`
	AccountID             string                 `json:"account_id,omitempty"`
	CompanyID             string                 `json:"company_id,omitempty"`
	CustomerID            string                 `json:"customer_id,omitempty"`
	CustomerName          string                 `json:"customer_name,omitempty"`
	CustomerEmail         string                 `json:"customer_email,omitempty"`
	Username              string                 `json:"username,omitempty"`
	PayrollProviderID     string                 `json:"payroll_provider_id,omitempty"`
	ConnectionStatus      ConnectionStatus       `json:"connection_status"`
	AuthenticationMethods []AuthenticationMethod `json:"authentication_methods,omitempty"`
	Entities              []Entity               `json:"entities,omitempty"` // multi-entity connections only
	Products              []string               `json:"products"`
	Manual                bool                   `json:"manual"`
}

// SandboxAccountUpdate is the body of PUT /sandbox/connections/accounts.
type SandboxAccountUpdate struct {
	ConnectionStatus string `json:"connection_status"`
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// lenientString returns a JSON string's value, the literal text of a number
// or boolean, and "" for null, objects, arrays and invalid JSON.
func lenientString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	case '{', '[', 'n':
		return ""
	default:
		if json.Valid(raw) {
			return string(raw)
		}
		return ""
	}
}

var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05", "2006-01-02"}

// lenientTime parses a date-time string in the common layouts (zone-less
// values are taken as UTC); anything else yields nil.
func lenientTime(raw json.RawMessage) *time.Time {
	s := lenientString(raw)
	if s == "" {
		return nil
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return &t
		}
	}
	return nil
}
