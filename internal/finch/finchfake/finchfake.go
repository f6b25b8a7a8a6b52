// Package finchfake is a fake of finch.API with one function field per call,
// for table tests of the operator's decisions. A call whose field is nil
// fails the test through Unexpected, so a table row states every call it
// expects. Integration tests use the simulator (pkg/finchsim) instead.
package finchfake

import (
	"context"
	"fmt"
	"sync"

	"github.com/connectops/finch-operator/internal/finch"
)

// API is a finch.API whose calls are its function fields.
type API struct {
	CreateSessionFn  func(ctx context.Context, req finch.SessionRequest) (*finch.SessionResponse, error)
	ReauthenticateFn func(ctx context.Context, req finch.ReauthRequest) (*finch.SessionResponse, error)
	ExchangeCodeFn   func(ctx context.Context, req finch.TokenRequest) (*finch.TokenResponse, error)
	IntrospectFn     func(ctx context.Context, accessToken string) (*finch.Introspection, error)
	DisconnectFn     func(ctx context.Context, accessToken string) error

	mu    sync.Mutex
	calls []string
}

var _ finch.API = (*API)(nil)

// ErrUnexpected is returned by a call whose function field is nil.
var ErrUnexpected = fmt.Errorf("finchfake: unexpected call")

// Calls lists the calls made so far, by name, in order.
func (f *API) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *API) record(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
}

// CreateSession calls CreateSessionFn.
func (f *API) CreateSession(ctx context.Context, req finch.SessionRequest) (*finch.SessionResponse, error) {
	f.record("CreateSession")
	if f.CreateSessionFn == nil {
		return nil, fmt.Errorf("%w: CreateSession", ErrUnexpected)
	}
	return f.CreateSessionFn(ctx, req)
}

// Reauthenticate calls ReauthenticateFn.
func (f *API) Reauthenticate(ctx context.Context, req finch.ReauthRequest) (*finch.SessionResponse, error) {
	f.record("Reauthenticate")
	if f.ReauthenticateFn == nil {
		return nil, fmt.Errorf("%w: Reauthenticate", ErrUnexpected)
	}
	return f.ReauthenticateFn(ctx, req)
}

// ExchangeCode calls ExchangeCodeFn.
func (f *API) ExchangeCode(ctx context.Context, req finch.TokenRequest) (*finch.TokenResponse, error) {
	f.record("ExchangeCode")
	if f.ExchangeCodeFn == nil {
		return nil, fmt.Errorf("%w: ExchangeCode", ErrUnexpected)
	}
	return f.ExchangeCodeFn(ctx, req)
}

// Introspect calls IntrospectFn.
func (f *API) Introspect(ctx context.Context, accessToken string) (*finch.Introspection, error) {
	f.record("Introspect")
	if f.IntrospectFn == nil {
		return nil, fmt.Errorf("%w: Introspect", ErrUnexpected)
	}
	return f.IntrospectFn(ctx, accessToken)
}

// Disconnect calls DisconnectFn.
func (f *API) Disconnect(ctx context.Context, accessToken string) error {
	f.record("Disconnect")
	if f.DisconnectFn == nil {
		return fmt.Errorf("%w: Disconnect", ErrUnexpected)
	}
	return f.DisconnectFn(ctx, accessToken)
}
