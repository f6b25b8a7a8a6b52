// Summarize and patch: the phase, conditions and retry bookkeeping of a pass, written once.

package controllers

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/events"
	"github.com/connectops/finch-operator/internal/finch"
)

// summarize is the one place that derives the phase and the conditions from
// what the steps recorded and decided, keeps the retry bookkeeping, and
// records the Warning for a change for the worse.
func (r *FinchConnectionReconciler) summarize(ctx context.Context, orig *finchv1.FinchConnection, s *syncState, out outcome) ctrl.Result {
	conn, st := s.conn, &s.conn.Status
	gen := conn.Generation
	conds := &st.Conditions
	result := ctrl.Result{RequeueAfter: out.requeue}
	if out.phase != "" {
		st.Phase = out.phase
	}
	if st.Phase == "" {
		st.Phase = finchv1.PhasePending
	}

	switch {
	case out.suspended:
		setCondition(conds, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, finchv1.ReasonSuspended, "spec.suspend is true: the operator makes no Finch calls for this connection")
		if meta.FindStatusCondition(*conds, finchv1.ConditionReady) == nil {
			setCondition(conds, gen, finchv1.ConditionReady, metav1.ConditionUnknown, finchv1.ReasonSuspended, "suspended before the first reconcile")
		}
		st.ObservedGeneration = gen
	case out.deferred:
		// Nothing done yet (backoff or budget): requests stay pending, and
		// conditions stay as they were unless there are none yet.
		restoreRequests(st, &orig.Status)
		if out.wait != nil && meta.FindStatusCondition(*conds, finchv1.ConditionReady) == nil {
			setCondition(conds, gen, finchv1.ConditionReady, metav1.ConditionUnknown, out.wait.reason, out.wait.message)
			setCondition(conds, gen, finchv1.ConditionReconciling, metav1.ConditionTrue, out.wait.reason, out.wait.message)
		}
	case out.retryErr != nil:
		restoreRequests(st, &orig.Status)
		why := finchv1.ReasonFinchUnavailable
		switch {
		case out.retryWhy != "":
			why = out.retryWhy
		case out.retryAfter > 0:
			why = finchv1.ReasonRateLimited
		}
		rs, wait := r.recordFailure(conn, s.now, why, out.retryAfter)
		if meta.FindStatusCondition(*conds, finchv1.ConditionReady) == nil {
			setCondition(conds, gen, finchv1.ConditionReady, metav1.ConditionUnknown, finchv1.ReasonProgressing, "working on the first Connect session")
		}
		msg := fmt.Sprintf("attempt %d failed, retrying at %s: %v", rs.Failures, rs.NextAttemptTime.UTC().Format(time.RFC3339), out.retryErr)
		setCondition(conds, gen, finchv1.ConditionReconciling, metav1.ConditionTrue, rs.Reason, msg)
		events.Record(r.Recorder, conn, corev1.EventTypeWarning, rs.Reason, "Reconcile", msg)
		logf.FromContext(ctx).Info("transient failure, backing off", "reason", rs.Reason, "error", out.retryErr.Error(), "retryIn", wait.String())
		result.RequeueAfter = wait
	case out.stall != nil:
		st.Retry = nil
		if st.Phase == finchv1.PhasePending || st.Phase == finchv1.PhaseAwaitingConnect && out.stall.reason == finchv1.ReasonDuplicateCustomerID {
			st.Phase = finchv1.PhaseError
		}
		setCondition(conds, gen, finchv1.ConditionReady, metav1.ConditionFalse, out.stall.reason, out.stall.message)
		setCondition(conds, gen, finchv1.ConditionStalled, metav1.ConditionTrue, out.stall.reason, out.stall.message)
		setCondition(conds, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, out.stall.reason, "stalled: needs a change to the spec, its Secrets or at Finch")
		st.ObservedGeneration = gen
	case out.wait != nil:
		setCondition(conds, gen, finchv1.ConditionReady, metav1.ConditionFalse, out.wait.reason, out.wait.message)
		setCondition(conds, gen, finchv1.ConditionReconciling, metav1.ConditionTrue, out.wait.reason, out.wait.message)
		setCondition(conds, gen, finchv1.ConditionStalled, metav1.ConditionFalse, out.wait.reason, "waiting for a dependency, not stalled")
	default:
		st.Retry = nil
		ready, why, msg := readiness(conn)
		setCondition(conds, gen, finchv1.ConditionReady, ready, why, msg)
		setCondition(conds, gen, finchv1.ConditionStalled, metav1.ConditionFalse, why, "not stalled")
		setCondition(conds, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, finchv1.ReasonSucceeded, "the operator has done all it can for now")
		st.ObservedGeneration = gen
	}
	if !out.suspended && !out.deferred {
		setConnectionConditions(conn, gen)
	}
	setDataSynced(conn, gen)
	r.emitTransition(orig, conn)
	if out.placed {
		return placedInLine(result)
	}
	return scheduled(result)
}

// recordFailure counts a failed attempt in status.retry (persisted, so a
// restart keeps backing off) and schedules the next: the exponential backoff,
// or a 429's Retry-After.
func (r *FinchConnectionReconciler) recordFailure(conn *finchv1.FinchConnection, now time.Time, why string, retryAfter time.Duration) (*finchv1.RetryStatus, time.Duration) {
	rs := conn.Status.Retry
	if rs == nil || rs.ObservedGeneration != conn.Generation {
		rs = &finchv1.RetryStatus{}
	}
	rs.Failures++
	rs.ObservedGeneration = conn.Generation
	rs.LastFailureTime = metav1.Time{Time: now}
	rs.Reason = why
	wait := r.backoff(rs.Failures)
	if retryAfter > 0 {
		wait = retryAfter + time.Duration(rand.Int64N(int64(time.Second)))
	}
	rs.NextAttemptTime = metav1.Time{Time: now.Add(wait)}
	conn.Status.Retry = rs
	return rs, wait
}

// patchStatus writes the status at the end of a pass, only when it changed
// from orig (what the server has), remembers the write for the stale-cache
// check, and updates the phase gauge.
func (r *FinchConnectionReconciler) patchStatus(ctx context.Context, orig, conn *finchv1.FinchConnection, result ctrl.Result) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(conn)
	if !equality.Semantic.DeepEqual(orig.Status, conn.Status) {
		if err := r.Status().Patch(ctx, conn, client.MergeFrom(orig)); err != nil {
			if apierrors.IsNotFound(err) {
				return ctrl.Result{}, nil
			}
			return ctrl.Result{}, fmt.Errorf("patch status: %w", err)
		}
	}
	if conn.ResourceVersion != orig.ResourceVersion {
		r.written.Store(key, conn.ResourceVersion)
	}
	if conn.Status.PendingCall == nil {
		r.calls.Delete(key) // the call's result (or its end) is written
	}
	if conn.DeletionTimestamp.IsZero() {
		r.phases.set(key, conn.Status.Phase)
	}
	if result.RequeueAfter < 0 {
		result.RequeueAfter = time.Second
	}
	return result, nil
}

// restoreRequests leaves request annotations unhandled when the pass did not
// carry them out, so the retry still honours them.
func restoreRequests(st, orig *finchv1.FinchConnectionStatus) {
	st.LastHandledReconcileAt = orig.LastHandledReconcileAt
	st.LastHandledReauthAt = orig.LastHandledReauthAt
	st.LastHandledWebhookEvent = orig.LastHandledWebhookEvent
}

// readiness is the Ready condition for a pass that went well.
func readiness(conn *finchv1.FinchConnection) (metav1.ConditionStatus, string, string) {
	st := &conn.Status
	if st.Session == nil && (st.Phase == finchv1.PhaseAwaitingConnect || st.Phase == finchv1.PhaseReauthRequired) {
		return metav1.ConditionUnknown, finchv1.ReasonProgressing, "working"
	}
	if msg, ok := refusedCode(st); ok {
		return metav1.ConditionFalse, finchv1.ReasonCodeRejected, msg
	}
	switch st.Phase {
	case finchv1.PhaseAwaitingConnect:
		if st.CodeExchangeError != "" {
			return metav1.ConditionFalse, finchv1.ReasonCodeRejected, st.CodeExchangeError + "; the Connect session is still open: have the employer finish Finch Connect again"
		}
		return metav1.ConditionTrue, finchv1.ReasonAwaitingEmployer, fmt.Sprintf("Connect session %s is waiting for the employer until %s: send them status.session.connectURL",
			st.Session.ID, st.Session.ExpiresAt.UTC().Format(time.RFC3339))
	case finchv1.PhaseReauthRequired:
		if why, msg := reauthReason(conn); why == finchv1.ReasonProductsChanged {
			return metav1.ConditionTrue, finchv1.ReasonAwaitingEmployer, msg + fmt.Sprintf(" (expires %s)", st.Session.ExpiresAt.UTC().Format(time.RFC3339))
		}
		return metav1.ConditionTrue, finchv1.ReasonAwaitingEmployer, fmt.Sprintf("the employer must re-authenticate connection %s: send them status.session.connectURL (expires %s)",
			st.ConnectionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339))
	case finchv1.PhaseConnected:
		return metav1.ConditionTrue, finchv1.ReasonConnected, fmt.Sprintf("connection %s is connected (provider %s)", st.ConnectionID, st.ProviderID) + unapplied(conn)
	case finchv1.PhaseConnecting:
		msg := "the employer authenticated; Finch is setting up the connection"
		if cs := st.ConnectionStatus; cs != nil {
			msg = fmt.Sprintf("Finch reports %s: %s", cs.Status, cmp.Or(cs.Message, "waiting for access to the provider"))
		}
		return metav1.ConditionTrue, finchv1.ReasonConnectionPending, msg
	default:
		if st.CodeExchangeError != "" {
			return metav1.ConditionFalse, finchv1.ReasonCodeRejected, st.CodeExchangeError
		}
		return metav1.ConditionUnknown, finchv1.ReasonProgressing, "working"
	}
}

// refusedCode is the Ready message of a connection that holds a token a
// refused code did not replace (status.codeExchangeError, e.g. a code Secret
// handed over without an open session, or another customer's code).
func refusedCode(st *finchv1.FinchConnectionStatus) (string, bool) {
	if st.CodeExchangeError == "" {
		return "", false
	}
	advice := fmt.Sprintf("; set annotation %s (kubectl finch resync) to clear this message", finchv1.RequestedAtAnnotation)
	switch st.Phase {
	case finchv1.PhaseConnected, finchv1.PhaseConnecting:
	case finchv1.PhaseReauthRequired:
		advice = "; the reauthentication session is still open: have the employer finish it again" + advice
	default:
		return "", false
	}
	return st.CodeExchangeError + advice, true
}

// unapplied notes spec changes Finch cannot apply to a connected connection:
// products Finch did not grant after the products re-authentication, and
// customer fields, which Finch keeps from the first session (the guide: after
// connect, only POST /connect/sessions/reauthenticate changes parameters, and
// it takes no customer fields).
func unapplied(conn *finchv1.FinchConnection) string {
	st, spec := &conn.Status, &conn.Spec
	var notes []string
	if missing := finch.MissingProducts(conn.ProductNames(), st.GrantedProducts); len(missing) > 0 {
		notes = append(notes, fmt.Sprintf("Finch did not grant %s after the employer re-authenticated (the provider may not offer it); change spec.products to ask again",
			strings.Join(missing, ", ")))
	}
	if st.FinchCustomerName != "" && st.FinchCustomerName != spec.CustomerName {
		notes = append(notes, fmt.Sprintf("spec.customerName %q differs from %q, which Finch keeps after the employer connected", spec.CustomerName, st.FinchCustomerName))
	}
	if st.FinchCustomerEmail != "" && st.FinchCustomerEmail != spec.CustomerEmail {
		notes = append(notes, fmt.Sprintf("spec.customerEmail %q differs from %q, which Finch keeps after the employer connected", spec.CustomerEmail, st.FinchCustomerEmail))
	}
	if len(notes) == 0 {
		return ""
	}
	return "; not applied: " + strings.Join(notes, "; ")
}

// setConnectionConditions derives Connected and ReauthRequired from status.
func setConnectionConditions(conn *finchv1.FinchConnection, gen int64) {
	st := &conn.Status
	why, reauthMsg := reauthReason(conn)
	healthy := st.Phase == finchv1.PhaseConnected || st.Phase == finchv1.PhaseReauthRequired && why == finchv1.ReasonProductsChanged
	if cs := st.ConnectionStatus; cs != nil && cs.Status == finch.StatusConnected && healthy {
		setCondition(&st.Conditions, gen, finchv1.ConditionConnected, metav1.ConditionTrue, finchv1.ReasonConnected, fmt.Sprintf("Finch reports connection %s connected", st.ConnectionID))
	} else {
		why := string(st.Phase)
		if st.Phase == finchv1.PhaseAwaitingConnect {
			why = finchv1.ReasonAwaitingEmployer
		}
		msg := "not connected yet"
		if cs := st.ConnectionStatus; cs != nil {
			msg = fmt.Sprintf("Finch reports %s", cs.Status)
		}
		setCondition(&st.Conditions, gen, finchv1.ConditionConnected, metav1.ConditionFalse, why, msg)
	}
	if st.Phase == finchv1.PhaseReauthRequired {
		setCondition(&st.Conditions, gen, finchv1.ConditionReauthRequired, metav1.ConditionTrue, why, reauthMsg)
	} else {
		setCondition(&st.Conditions, gen, finchv1.ConditionReauthRequired, metav1.ConditionFalse, "NotRequired", "no reauthentication needed")
	}
}

// emitTransition records an Event when the Ready reason or the phase changes.
func (r *FinchConnectionReconciler) emitTransition(orig, conn *finchv1.FinchConnection) {
	oldReady := meta.FindStatusCondition(orig.Status.Conditions, finchv1.ConditionReady)
	newReady := meta.FindStatusCondition(conn.Status.Conditions, finchv1.ConditionReady)
	if newReady == nil || (oldReady != nil && oldReady.Reason == newReady.Reason && orig.Status.Phase == conn.Status.Phase) {
		return
	}
	if newReady.Status == metav1.ConditionTrue {
		// Good news has its own Event from the step that made it
		// (SessionCreated, Connected, ReauthSessionCreated): one write, not two.
		return
	}
	events.Record(r.Recorder, conn, corev1.EventTypeWarning, newReady.Reason, "Reconcile", fmt.Sprintf("phase %s: %s", conn.Status.Phase, newReady.Message))
}

// backoff is the persisted exponential backoff for the n-th consecutive failure.
func (r *FinchConnectionReconciler) backoff(n int32) time.Duration {
	d := r.RetryBase
	if d <= 0 {
		d = defaultRetryBase
	}
	for i := int32(1); i < n && d < retryMax; i++ {
		d *= 2
	}
	if d > retryMax {
		d = retryMax
	}
	return d + time.Duration(rand.Int64N(int64(d/5)+1))
}

// setCondition sets a condition, keeping lastTransitionTime when the status
// does not change (meta.SetStatusCondition does that).
func setCondition(conds *[]metav1.Condition, gen int64, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: events.Truncate(msg, events.MaxMessage), ObservedGeneration: gen,
	})
}

// reauthReason says why a reauthentication session is published: Finch asked
// for it (ReauthRequired), or spec.products asks for products the healthy
// connection does not grant (ProductsChanged).
func reauthReason(conn *finchv1.FinchConnection) (string, string) {
	st := &conn.Status
	if pc := pendingReauth(st); pc != nil && st.Session == nil {
		return finchv1.ReasonReauthUnrecorded, fmt.Sprintf("a reauthentication session may have been issued at %s without its link being recorded; see the Ready condition",
			pc.StartedAt.UTC().Format(time.RFC3339))
	}
	if cs := st.ConnectionStatus; cs != nil && cs.Status == finch.StatusConnected && st.Session != nil && st.Session.Kind == finchv1.SessionReauthenticate {
		if missing := finch.MissingProducts(conn.ProductNames(), st.GrantedProducts); len(missing) > 0 {
			return finchv1.ReasonProductsChanged, fmt.Sprintf("spec.products asks for %s, which connection %s does not grant: the employer must re-authenticate to grant them; send them status.session.connectURL",
				strings.Join(missing, ", "), st.ConnectionID)
		}
	}
	return finchv1.ReasonReauthRequired, "a reauthentication session is waiting for the employer: status.session.connectURL"
}
