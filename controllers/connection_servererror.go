// Repeated 5xx from GET /introspect for one connection: a revoked connection, maybe.

package controllers

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"k8s.io/apimachinery/pkg/types"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

const (
	// serverErrorStreak is how many consecutive 5xx answers to GET /introspect
	// for one connection, while Finch answers other connections of its app,
	// make the next attempt wait serverErrorBackoff.
	serverErrorStreak = 3
	// serverErrorBackoff: a revoked connection "is usually returned as a 401 -
	// reauthenticate_user error but can sometimes be returned as 500 -
	// server_error", and "Retrying immediately usually will not resolve the
	// issue. We recommend retrying the API request in a few hours."
	// (developer.tryfinch.com/api-reference/development-guides/errors/Error-Handling).
	serverErrorBackoff = 3 * time.Hour
)

// introspectFailed sorts a failed introspection as finchError does, except
// that a 5xx answered serverErrorStreak times in a row for this connection,
// while other connections of the app were introspected in between, waits
// hours instead of minutes: Finch answers, just not for this connection. A
// 5xx for every connection (Finch is down) keeps the usual backoff. The
// hours last until an introspection of the connection succeeds. The
// persisted status.retry carries the wait across restarts; the requestedAt
// annotation or a webhook skips it.
func (r *FinchConnectionReconciler) introspectFailed(s *syncState, err error) outcome {
	out := r.finchError(s, "introspect", err)
	o, ok := out.(retrying)
	var fe *finch.Error
	if !ok || o.after > 0 || !errors.As(err, &fe) || fe.Local || fe.StatusCode < 500 {
		return out
	}
	rs := s.conn.Status.Retry
	if rs == nil || rs.ObservedGeneration != s.conn.Generation ||
		(rs.Reason != finchv1.ReasonFinchUnavailable && rs.Reason != finchv1.ReasonConnectionServerError) {
		return out
	}
	// Once waiting hours, keep waiting hours until an answer: other
	// connections may not be due for introspection within the wait.
	streak := rs.Failures + 1
	others := rs.Reason == finchv1.ReasonConnectionServerError || r.answeredSince(s.conn.AppKey(), rs.LastFailureTime.Time)
	if streak < serverErrorStreak || !others {
		return out
	}
	wait := serverErrorBackoff + time.Duration(rand.Int64N(int64(serverErrorBackoff/6)))
	o.err = fmt.Errorf("introspect: Finch answered %d for this connection %d times in a row while it answers other connections of %s: a revoked connection can be returned as 500 server_error, and Finch advises retrying in a few hours (developer.tryfinch.com Error Handling), so the next attempt waits about %s; set annotation %s to check now: %w",
		fe.StatusCode, streak, s.conn.AppDescription(), wait.Round(time.Minute), finchv1.RequestedAtAnnotation, err)
	o.after, o.why = wait, finchv1.ReasonConnectionServerError
	return o
}

// noteAnswered records that Finch answered an introspection of one of the
// app's connections (in memory: after a restart the persisted backoff still
// holds, and the next answer refills it).
func (r *FinchConnectionReconciler) noteAnswered(app types.NamespacedName, at time.Time) {
	r.answered.Store(app, at)
}

// answeredSince says whether Finch answered an introspection of one of the
// app's connections after t.
func (r *FinchConnectionReconciler) answeredSince(app types.NamespacedName, t time.Time) bool {
	v, ok := r.answered.Load(app)
	return ok && v.(time.Time).After(t)
}
