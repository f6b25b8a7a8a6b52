package tokens

import (
	"errors"
	"fmt"
	"time"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// The rule of every hand-off of an authorization code, shared by the redirect
// callback and the embedded flow's code Secret: a code is spent only for a
// connection whose published Connect or reauthentication session can still
// produce one (SessionOpen, not completed), and the token it yields is stored
// only when Finch says it is that connection's (CheckToken). Whoever can hand
// over a code (a browser at the callback, a backend allowed only to create
// Secrets) must not be able to put another employer's connection, or none,
// in place of a connected one.

var (
	// ErrNoSession: the connection publishes no session that can still
	// produce a code (none, or it expired).
	ErrNoSession = errors.New("no open Connect or reauthentication session")
	// ErrSessionCompleted: the published session already produced the token
	// stored for the connection.
	ErrSessionCompleted = errors.New("the open session already produced the stored token")
	// ErrOtherCustomer: the token response names another customer_id than
	// the connection's spec.customerID.
	ErrOtherCustomer = errors.New("the token is for another customer_id than spec.customerID")
	// ErrOtherConnection: a reauthentication session, which Finch issues
	// for status.connectionID, yielded a token of another connection.
	ErrOtherConnection = errors.New("the reauthentication session's token is for another connection than status.connectionID")
)

// SessionOpen says whether sess, a connection's published session, can still
// produce a code at now: it exists and has not expired.
func SessionOpen(sess *finchv1.Session, now time.Time) bool {
	return sess != nil && now.Before(sess.ExpiresAt.Time)
}

// CodeSession returns the session a code handed over for conn now may come
// from: its published session, open (SessionOpen) and not completed, that is
// the token Secret (whose session annotation is tokenSessionID) was not
// written from it. It returns ErrNoSession or ErrSessionCompleted otherwise.
func CodeSession(conn *finchv1.FinchConnection, tokenSessionID string, now time.Time) (*finchv1.Session, error) {
	sess := conn.Status.Session
	if !SessionOpen(sess, now) {
		return nil, ErrNoSession
	}
	if tokenSessionID != "" && tokenSessionID == sess.ID {
		return nil, fmt.Errorf("session %s: %w", sess.ID, ErrSessionCompleted)
	}
	return sess, nil
}

// OtherCustomer says whether a token response names another customer than
// conn's. A response without customer_id names none (Finch returns it for
// connections made through a session; older ones have none).
func OtherCustomer(conn *finchv1.FinchConnection, resp *finch.TokenResponse) bool {
	return resp.CustomerID != "" && resp.CustomerID != conn.Spec.CustomerID
}

// CheckToken says whether the token a code from sess yielded is conn's:
// ErrOtherCustomer when it names another customer, ErrOtherConnection when
// sess is a reauthentication session (Finch issues it for
// status.connectionID) and the token is another connection's.
func CheckToken(conn *finchv1.FinchConnection, sess *finchv1.Session, resp *finch.TokenResponse) error {
	if OtherCustomer(conn, resp) {
		return ErrOtherCustomer
	}
	id := conn.Status.ConnectionID
	if sess != nil && sess.Kind == finchv1.SessionReauthenticate && id != "" && resp.ConnectionID != "" && resp.ConnectionID != id {
		return ErrOtherConnection
	}
	return nil
}
