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
	CustomerID      string           `json:"customer_id"`
	CustomerName    string           `json:"customer_name"`
	CustomerEmail   string           `json:"customer_email,omitempty"`
	Products        []string         `json:"products"`
	Integration     *integrationWire `json:"integration,omitempty"`
	Manual          *bool            `json:"manual,omitempty"`
	MinutesToExpire *int             `json:"minutes_to_expire,omitempty"`
	RedirectURI     string           `json:"redirect_uri,omitempty"`
	Sandbox         string           `json:"sandbox,omitempty"`
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
type SessionResponse struct {
	SessionID  string `json:"session_id"`
	ConnectURL string `json:"connect_url"`
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
}

// UnmarshalJSON decodes leniently: a malformed last_successful_sync or an
// unexpected field type leaves that field empty instead of failing the whole
// introspection, and a bare string is taken as the status.
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
	return nil
}

// AuthenticationMethod is one entry of Introspection.AuthenticationMethods.
type AuthenticationMethod struct {
	Type             string            `json:"type"`
	ConnectionStatus *ConnectionStatus `json:"connection_status,omitempty"`
	Products         []string          `json:"products,omitempty"`
}

// Introspection is the response of GET /introspect.
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
