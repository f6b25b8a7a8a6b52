// Intents: a Finch call that must not run twice follows a confirmed status
// write that announces it.

package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/events"
)

// The calls that need an intent are POST /connect/sessions/reauthenticate
// (every call mints a new session: a second one replaces, in status, a link
// the employer may already have) and POST /disconnect. The pattern is
// crossplane-runtime's managed reconciler (pkg/reconciler/managed/reconciler.go):
// it writes the external-create-pending annotation before Create and
// external-create-succeeded or -failed after, and a reconcile that finds
// pending newer than both (meta.ExternalCreateIncomplete) does not create
// again. Here the intent is status.pendingCall, written by a status patch
// whose success (the API server's answer, and its resourceVersion in
// r.written so no later pass acts on an older cached copy) comes before the
// call; the call's result replaces it in the pass's final write.
//
// POST /connect/sessions needs no intent: Finch refreshes and returns the same
// session_id for the same customer_id until the employer connects (Connection &
// Session ID Migration Guide,
// https://support.tryfinch.com/hc/en-us/articles/30635805701908-Connection-Session-ID-Migration-Guide),
// so repeating it after a lost write re-arms the same link.

// committable is the context of a reconcile pass: it follows parent's
// cancellation (the manager stopping) until commit is called, then no longer.
// A pass commits before a call that must not be cut short: a code exchange
// (the code is single-use: cancelled between the exchange and the token's
// Secret, the token is lost) and a reauthentication intent (cancelled between
// the intent and the write of the session it issued, the next leader may not
// issue another until that session would expire). Cancelled there by a
// rolling upgrade, either loses the employer's work; committed, the manager's
// graceful shutdown waits for the pass (the Finch client's and API server's
// timeouts bound it). cancel releases the context when the pass ends.
func committable(parent context.Context) (ctx context.Context, commit, cancel func()) {
	ctx, end := context.WithCancel(context.WithoutCancel(parent))
	var committed atomic.Bool
	stop := context.AfterFunc(parent, func() {
		if !committed.Load() {
			end()
		}
	})
	return ctx, func() { committed.Store(true); stop() }, func() { stop(); end() }
}

// callMemo is what this process saw of the call behind a status.pendingCall,
// kept until a status write without the intent is confirmed. A write lost
// after the call (a timeout, a conflict) is then repaired from it without
// calling Finch again. After a restart there is none and the intent alone
// decides.
type callMemo struct {
	startedAt int64            // the intent's startedAt, Unix seconds (what status keeps)
	sent      bool             // the request went out
	ok        bool             // Finch answered success
	session   *finchv1.Session // the reauthentication session Finch issued
}

// newIntent is a status.pendingCall of kind starting now. Whole seconds:
// status keeps no more, and the memo is matched on it.
func newIntent(kind finchv1.PendingCallKind, now time.Time) *finchv1.PendingCall {
	return &finchv1.PendingCall{Kind: kind, StartedAt: metav1.Time{Time: now.Truncate(time.Second)}}
}

func (r *FinchConnectionReconciler) remember(key types.NamespacedName, pc *finchv1.PendingCall, m callMemo) {
	m.startedAt = pc.StartedAt.Unix()
	r.calls.Store(key, m)
}

// recall is the memo of the call behind pc, if this process made it.
func (r *FinchConnectionReconciler) recall(key types.NamespacedName, pc *finchv1.PendingCall) (callMemo, bool) {
	v, ok := r.calls.Load(key)
	if !ok {
		return callMemo{}, false
	}
	m := v.(callMemo)
	return m, m.startedAt == pc.StartedAt.Unix()
}

// recordIntent writes status with the intent pc (and whatever the pass has
// recorded so far, such as the introspection that asked for the call). The
// call may be made only when it returns nil.
func (r *FinchConnectionReconciler) recordIntent(ctx context.Context, s *syncState, pc *finchv1.PendingCall) error {
	s.commitPass()
	key := client.ObjectKeyFromObject(s.conn)
	// Remembered before the write: a write that fails at the client but lands
	// at the server leaves an intent this process knows was never acted on.
	r.remember(key, pc, callMemo{})
	s.conn.Status.PendingCall = pc
	if s.writeStatus == nil {
		return errors.New("no status writer for the intent")
	}
	if err := s.writeStatus(ctx); err != nil {
		s.conn.Status.PendingCall = nil
		return fmt.Errorf("write status.pendingCall %s: %w", pc.Kind, err)
	}
	return nil
}

// writeIntent is syncState.writeStatus for a reconcile: it patches the status
// built so far and makes it the base of the pass's final patch. The write
// acknowledges the pass's requests (s.requests), which the call carries out:
// after a crash the call is not asked for again. s.conn keeps them
// unacknowledged, so a pass that then fails (retrying) leaves them pending
// in its final write.
func (r *FinchConnectionReconciler) writeIntent(ctx context.Context, s *syncState) error {
	obj := s.conn.DeepCopy()
	s.requests.acknowledge(&obj.Status)
	if err := r.Status().Patch(ctx, obj, client.MergeFrom(s.base)); err != nil {
		return err
	}
	r.written.Store(client.ObjectKeyFromObject(obj), obj.ResourceVersion)
	s.conn.ResourceVersion = obj.ResourceVersion
	s.base = obj
	return nil
}

// intentExpiry is when the reauthentication session a pending call may have
// issued expires.
func intentExpiry(conn *finchv1.FinchConnection, pc *finchv1.PendingCall) time.Time {
	if pc.ExpiresAt != nil {
		return pc.ExpiresAt.Time
	}
	return pc.StartedAt.Add(time.Duration(conn.SessionMinutes()) * time.Minute)
}

// pendingReauth is the reauthentication intent in status, if any.
func pendingReauth(st *finchv1.FinchConnectionStatus) *finchv1.PendingCall {
	if pc := st.PendingCall; pc != nil && pc.Kind == finchv1.PendingReauthenticate {
		return pc
	}
	return nil
}

// unrecordedReauth handles a reauthentication intent found without its
// session: a call may have issued one whose link was never recorded. It
// adopts the session this process saw, drops an intent known to have issued
// nothing, one whose session would have expired, or one the user overrides
// (reauthRequestedAt), and otherwise waits: a second session now would
// replace a link the employer may already hold. nil: go on and issue one.
//
// Reads s.requests and this process's memo of the call; writes
// status.pendingCall and status.session.
func (r *FinchConnectionReconciler) unrecordedReauth(s *syncState) outcome {
	conn, st := s.conn, &s.conn.Status
	pc := pendingReauth(st)
	if pc == nil {
		return nil
	}
	if m, ok := r.recall(client.ObjectKeyFromObject(conn), pc); ok {
		st.PendingCall = nil
		if m.session == nil {
			return nil // never sent, or Finch refused it: nothing was issued
		}
		// Only the status write after the call was lost: record its result.
		st.Session = m.session.DeepCopy()
		return done{phase: finchv1.PhaseReauthRequired, requeue: st.Session.ExpiresAt.Sub(s.now) + time.Second}
	}
	expires := intentExpiry(conn, pc)
	switch {
	case !s.now.Before(expires):
		st.PendingCall = nil
		countSessionExpired(s.conn)
		events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonSessionExpired, "Reauthenticate", fmt.Sprintf(
			"the reauthentication session that may have been issued at %s (its link was not recorded) has expired", pc.StartedAt.UTC().Format(time.RFC3339)))
		return nil
	case s.requests.forceReauth():
		st.PendingCall = nil // asked for explicitly: a new link replaces the unrecorded one
		return nil
	}
	return waiting{phase: finchv1.PhaseReauthRequired, requeue: expires.Sub(s.now) + time.Second, reason: reason{finchv1.ReasonReauthUnrecorded, fmt.Sprintf(
		"a reauthentication session for connection %s may have been issued at %s, but the operator stopped (or its status write was lost) before recording its link. "+
			"No other is issued until %s, when that session expires, so a link the employer may already have keeps working; "+
			"an employer who completes it reconnects as usual. To issue a new link now, set annotation %s (kubectl finch reauth %s)",
		st.ConnectionID, pc.StartedAt.UTC().Format(time.RFC3339), expires.UTC().Format(time.RFC3339), finchv1.ReauthRequestedAtAnnotation, conn.Name)}}
}
