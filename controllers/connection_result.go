// A pass's result: exactly one of a closed set of kinds, which summarize
// switches on.

package controllers

import (
	"fmt"
	"time"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// outcome is how a pass ends. The kinds below are the whole set (the
// unexported method closes it); a step returns nil to hand over to the next
// step. The model is Flux source-controller's internal/error (Stalling,
// Waiting, Generic) and its summarize-and-patch: one kind per pass, so which
// conditions a pass writes never depends on the order of checks.
type outcome interface{ isOutcome() }

// done: the steps did all they can for now. Ready follows from status
// (readiness); the pass comes back at requeue (0: only on events).
type done struct {
	phase   finchv1.Phase // the phase this pass reached ("": unchanged)
	requeue time.Duration
}

// suspended: spec.suspend is true; no Finch calls.
type suspended struct{}

// unseen: nothing to record yet (the app is not in the cache yet): no status
// write, no Event; the pass comes back at requeue.
type unseen struct{ requeue time.Duration }

// deferred: nothing done yet (a persisted backoff, or the request budget).
// Requests stay pending and conditions stay as they were; wait, if any, is
// shown only on a connection that has no Ready condition yet.
type deferred struct {
	requeue time.Duration
	wait    *reason
	inLine  bool // requeue is a place in the app's budget line (priority.go)
}

// retrying: a transient failure (Flux's Generic error); status.retry
// persists the backoff.
type retrying struct {
	err   error
	after time.Duration // a 429's Retry-After, or a longer wait why explains
	why   string        // the reason when not FinchUnavailable or RateLimited
}

// stalling: needs a human (Flux's Stalling error).
type stalling struct {
	phase finchv1.Phase // "": unchanged
	reason
}

// waiting: waits for something a watch or the clock will bring (Flux's
// Waiting error): Ready False, Reconciling True, not Stalled.
type waiting struct {
	phase   finchv1.Phase // "": unchanged
	requeue time.Duration
	reason
}

func (done) isOutcome()      {}
func (suspended) isOutcome() {}
func (unseen) isOutcome()    {}
func (deferred) isOutcome()  {}
func (retrying) isOutcome()  {}
func (stalling) isOutcome()  {}
func (waiting) isOutcome()   {}

type reason struct{ reason, message string }

func stalled(r, format string, args ...any) stalling {
	return stalling{reason: reason{r, fmt.Sprintf(format, args...)}}
}

func retry(err error) outcome { return retrying{err: err} }

func waitFor(r, message string) waiting { return waiting{reason: reason{r, message}} }
