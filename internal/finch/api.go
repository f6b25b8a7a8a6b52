package finch

import "context"

// API is the Finch calls the operator makes: the seam between the operator's
// decisions and Finch. *Client satisfies it; finchfake.API fakes it with
// function fields for tests of the decisions alone (as cert-manager's ACME
// client interface and FakeACME, crossplane-runtime's ExternalClientFns).
type API interface {
	// CreateSession is POST /connect/sessions.
	CreateSession(ctx context.Context, req SessionRequest) (*SessionResponse, error)
	// Reauthenticate is POST /connect/sessions/reauthenticate.
	Reauthenticate(ctx context.Context, req ReauthRequest) (*SessionResponse, error)
	// ExchangeCode is POST /auth/token.
	ExchangeCode(ctx context.Context, req TokenRequest) (*TokenResponse, error)
	// Introspect is GET /introspect with the connection's access token.
	Introspect(ctx context.Context, accessToken string) (*Introspection, error)
	// Disconnect is POST /disconnect with the connection's access token.
	Disconnect(ctx context.Context, accessToken string) error
}

var _ API = (*Client)(nil)
