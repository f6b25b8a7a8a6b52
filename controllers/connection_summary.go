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
// what the steps recorded and the pass's one outcome, keeps the retry
// bookkeeping, and records the Warning for a change for the worse. A pass
// that acted (not deferred, not retrying) acknowledges its requests.
func (r *FinchConnectionReconciler) summarize(ctx context.Context, orig *finchv1.FinchConnection, s *syncState, out outcome) ctrl.Result {
	conn, st := s.conn, &s.conn.Status
	missing := missingProducts(conn)
	reauth := reauthReason(conn, missing) // the steps are over: it holds for the pass
	result, inLine := ctrl.Result{}, false
	switch o := out.(type) {
	case suspended:
		markSuspended(conn)
	case deferred:
		markDeferred(conn, o.wait)
		result.RequeueAfter, inLine = o.requeue, o.inLine
	case retrying:
		result.RequeueAfter = r.markRetrying(ctx, conn, s.now, o, reauth)
	case stalling:
		s.requests.acknowledge(st)
		markStalled(conn, o.phase, o.reason, reauth)
	case waiting:
		s.requests.acknowledge(st)
		markWaiting(conn, o.phase, o.reason, reauth)
		result.RequeueAfter = o.requeue
	case done:
		s.requests.acknowledge(st)
		markDone(conn, o.phase, reauth, missing)
		result.RequeueAfter = o.requeue
	}
	setDataSynced(conn, conn.Generation)
	r.emitTransition(orig, conn)
	if inLine {
		return placedInLine(result)
	}
	return scheduled(result)
}

// setPhase records the phase a pass reached ("": unchanged), Pending before
// the first.
func setPhase(st *finchv1.FinchConnectionStatus, phase finchv1.Phase) {
	if phase != "" {
		st.Phase = phase
	}
	if st.Phase == "" {
		st.Phase = finchv1.PhasePending
	}
}

// markSuspended: spec.suspend; Ready is left as it was, if any.
func markSuspended(conn *finchv1.FinchConnection) {
	st, gen := &conn.Status, conn.Generation
	setPhase(st, "")
	setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, finchv1.ReasonSuspended, "spec.suspend is true: the operator makes no Finch calls for this connection")
	if meta.FindStatusCondition(st.Conditions, finchv1.ConditionReady) == nil {
		setCondition(&st.Conditions, gen, finchv1.ConditionReady, metav1.ConditionUnknown, finchv1.ReasonSuspended, "suspended before the first reconcile")
	}
	st.ObservedGeneration = gen
}

// markDeferred: nothing done yet (backoff or budget). Requests stay
// pending, and conditions stay as they were unless there are none yet.
func markDeferred(conn *finchv1.FinchConnection, wait *reason) {
	st, gen := &conn.Status, conn.Generation
	setPhase(st, "")
	if wait != nil && meta.FindStatusCondition(st.Conditions, finchv1.ConditionReady) == nil {
		setCondition(&st.Conditions, gen, finchv1.ConditionReady, metav1.ConditionUnknown, wait.reason, wait.message)
		setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionTrue, wait.reason, wait.message)
	}
}

// markRetrying counts the failure in status.retry, says so, and returns
// when to try again. Requests stay pending, so the retry honours them.
func (r *FinchConnectionReconciler) markRetrying(ctx context.Context, conn *finchv1.FinchConnection, now time.Time, o retrying, reauth reason) time.Duration {
	st, gen := &conn.Status, conn.Generation
	setPhase(st, "")
	why := finchv1.ReasonFinchUnavailable
	switch {
	case o.why != "":
		why = o.why
	case o.after > 0:
		why = finchv1.ReasonRateLimited
	}
	rs, wait := r.recordFailure(conn, now, why, o.after)
	if meta.FindStatusCondition(st.Conditions, finchv1.ConditionReady) == nil {
		setCondition(&st.Conditions, gen, finchv1.ConditionReady, metav1.ConditionUnknown, finchv1.ReasonProgressing, "working on the first Connect session")
	}
	msg := fmt.Sprintf("attempt %d failed, retrying at %s: %v", rs.Failures, rs.NextAttemptTime.UTC().Format(time.RFC3339), o.err)
	setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionTrue, rs.Reason, msg)
	events.Record(r.Recorder, conn, corev1.EventTypeWarning, rs.Reason, "Reconcile", msg)
	logf.FromContext(ctx).Info("transient failure, backing off", "reason", rs.Reason, "error", o.err.Error(), "retryIn", wait.String())
	setConnectionConditions(conn, reauth)
	return wait
}

// markStalled: the pass needs a human.
func markStalled(conn *finchv1.FinchConnection, phase finchv1.Phase, why, reauth reason) {
	st, gen := &conn.Status, conn.Generation
	setPhase(st, phase)
	st.Retry = nil
	if st.Phase == finchv1.PhasePending || st.Phase == finchv1.PhaseAwaitingConnect && why.reason == finchv1.ReasonDuplicateCustomerID {
		st.Phase = finchv1.PhaseError
	}
	setCondition(&st.Conditions, gen, finchv1.ConditionReady, metav1.ConditionFalse, why.reason, why.message)
	setCondition(&st.Conditions, gen, finchv1.ConditionStalled, metav1.ConditionTrue, why.reason, why.message)
	setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, why.reason, "stalled: needs a change to the spec, its Secrets or at Finch")
	st.ObservedGeneration = gen
	setConnectionConditions(conn, reauth)
}

// markWaiting: the pass waits for something a watch or the clock brings.
func markWaiting(conn *finchv1.FinchConnection, phase finchv1.Phase, why, reauth reason) {
	st, gen := &conn.Status, conn.Generation
	setPhase(st, phase)
	setCondition(&st.Conditions, gen, finchv1.ConditionReady, metav1.ConditionFalse, why.reason, why.message)
	setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionTrue, why.reason, why.message)
	setCondition(&st.Conditions, gen, finchv1.ConditionStalled, metav1.ConditionFalse, why.reason, "waiting for a dependency, not stalled")
	setConnectionConditions(conn, reauth)
}

// markDone: Ready follows from status (readiness).
func markDone(conn *finchv1.FinchConnection, phase finchv1.Phase, reauth reason, missing []string) {
	st, gen := &conn.Status, conn.Generation
	setPhase(st, phase)
	st.Retry = nil
	ready, why, msg := readiness(conn, reauth, missing)
	setCondition(&st.Conditions, gen, finchv1.ConditionReady, ready, why, msg)
	setCondition(&st.Conditions, gen, finchv1.ConditionStalled, metav1.ConditionFalse, why, "not stalled")
	setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, finchv1.ReasonSucceeded, "the operator has done all it can for now")
	st.ObservedGeneration = gen
	setConnectionConditions(conn, reauth)
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
		r.phases.set(conn)
	}
	if result.RequeueAfter < 0 {
		result.RequeueAfter = time.Second
	}
	return result, nil
}

// readiness is the Ready condition for a pass that went well, given why a
// reauthentication session is published and the products not granted.
func readiness(conn *finchv1.FinchConnection, reauth reason, missing []string) (metav1.ConditionStatus, string, string) {
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
		if reauth.reason == finchv1.ReasonProductsChanged {
			return metav1.ConditionTrue, finchv1.ReasonAwaitingEmployer, reauth.message + fmt.Sprintf(" (expires %s)", st.Session.ExpiresAt.UTC().Format(time.RFC3339))
		}
		return metav1.ConditionTrue, finchv1.ReasonAwaitingEmployer, fmt.Sprintf("the employer must re-authenticate connection %s: send them status.session.connectURL (expires %s)",
			st.ConnectionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339))
	case finchv1.PhaseConnected:
		return metav1.ConditionTrue, finchv1.ReasonConnected, fmt.Sprintf("connection %s is connected (provider %s)", st.ConnectionID, st.ProviderID) + unapplied(conn, missing)
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
func unapplied(conn *finchv1.FinchConnection, missing []string) string {
	st, spec := &conn.Status, &conn.Spec
	var notes []string
	if len(missing) > 0 {
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

// setConnectionConditions derives Connected and ReauthRequired from status
// and why a reauthentication session is published.
func setConnectionConditions(conn *finchv1.FinchConnection, reauth reason) {
	st, gen := &conn.Status, conn.Generation
	healthy := st.Phase == finchv1.PhaseConnected || st.Phase == finchv1.PhaseReauthRequired && reauth.reason == finchv1.ReasonProductsChanged
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
		setCondition(&st.Conditions, gen, finchv1.ConditionReauthRequired, metav1.ConditionTrue, reauth.reason, reauth.message)
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

// missingProducts are the products spec.products asks for that the
// connection does not grant.
func missingProducts(conn *finchv1.FinchConnection) []string {
	return finch.MissingProducts(conn.ProductNames(), conn.Status.GrantedProducts)
}

// reauthReason says why a reauthentication session is published: Finch asked
// for it (ReauthRequired), or spec.products asks for products the healthy
// connection does not grant (ProductsChanged), given those (missing).
func reauthReason(conn *finchv1.FinchConnection, missing []string) reason {
	st := &conn.Status
	if pc := pendingReauth(st); pc != nil && st.Session == nil {
		return reason{finchv1.ReasonReauthUnrecorded, fmt.Sprintf("a reauthentication session may have been issued at %s without its link being recorded; see the Ready condition",
			pc.StartedAt.UTC().Format(time.RFC3339))}
	}
	if msg, ok := productsChanged(conn, missing); ok {
		return reason{finchv1.ReasonProductsChanged, msg}
	}
	return reason{finchv1.ReasonReauthRequired, "a reauthentication session is waiting for the employer: status.session.connectURL"}
}

// productsChanged is the message of a reauthentication session published
// because spec.products asks for products (missing) the connected
// connection does not grant.
func productsChanged(conn *finchv1.FinchConnection, missing []string) (string, bool) {
	st := &conn.Status
	cs := st.ConnectionStatus
	if cs == nil || cs.Status != finch.StatusConnected || st.Session == nil || st.Session.Kind != finchv1.SessionReauthenticate || len(missing) == 0 {
		return "", false
	}
	return fmt.Sprintf("spec.products asks for %s, which connection %s does not grant: the employer must re-authenticate to grant them; send them status.session.connectURL",
		strings.Join(missing, ", "), st.ConnectionID), true
}
