// Conditions, status and error classification for FinchConnection passes.

package controllers

import (
	"context"
	"errors"
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
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// finchError sorts a failed Finch call into Stalled (4xx: the request itself
// is wrong) or a transient retry (429, 5xx, network).
func (r *FinchConnectionReconciler) finchError(s *syncState, what string, err error) outcome {
	switch finch.Classify(err) {
	case finch.ClassTerminal:
		if finch.IsInvalidClient(err) {
			s.app.RejectCredentials()
			return stalled(ReasonInvalidCredentials,
				"Finch rejected the client credentials of FinchApp %q (invalid_client): fix its credentials Secret (the sandbox, development and production apps have different credentials)", s.conn.AppName())
		}
		if s.conn.Status.Phase == "" || s.conn.Status.Phase == finchv1.PhasePending {
			s.conn.Status.Phase = finchv1.PhaseError
		}
		return stalled(ReasonFinchRejected, "Finch rejected the request to %s: %s. Fix the FinchConnection spec and apply it again", what, finchMessage(err))
	case finch.ClassRateLimited:
		after, _ := finch.RateLimited(err)
		if finch.IsIPRateLimited(err) {
			r.reportPenalty(s.conn)
		}
		return outcome{retryErr: fmt.Errorf("%s: %w", what, err), retryAfter: after}
	default:
		return outcome{retryErr: fmt.Errorf("%s: %w", what, err)}
	}
}

// finchMessage is Finch's own message for an error (never a token).
func finchMessage(err error) string {
	var fe *finch.Error
	if errors.As(err, &fe) {
		if fe.FinchCode != "" {
			return fmt.Sprintf("%s (%d %s/%s)", fe.Message, fe.StatusCode, fe.Name, fe.FinchCode)
		}
		return fmt.Sprintf("%s (%d %s)", fe.Message, fe.StatusCode, fe.Name)
	}
	return err.Error()
}

// ensureFinalizer adds the finalizer once the connection holds a token.
func (r *FinchConnectionReconciler) ensureFinalizer(ctx context.Context, conn *finchv1.FinchConnection) error {
	if controllerutil.ContainsFinalizer(conn, Finalizer) {
		return nil
	}
	patch := client.MergeFrom(conn.DeepCopy())
	controllerutil.AddFinalizer(conn, Finalizer)
	if err := r.Patch(ctx, conn, patch); err != nil {
		return fmt.Errorf("add finalizer: %w", err)
	}
	return nil
}

// finish turns the outcome into status and conditions, patches status once
// (skipped when unchanged), records events and metrics, and says when to come back.
func (r *FinchConnectionReconciler) finish(ctx context.Context, orig *finchv1.FinchConnection, s *syncState, out outcome) (ctrl.Result, error) {
	conn, st := s.conn, &s.conn.Status
	gen := conn.Generation
	key := client.ObjectKeyFromObject(conn)
	conds := &st.Conditions
	if st.Phase == "" {
		st.Phase = finchv1.PhasePending
	}
	result := ctrl.Result{RequeueAfter: out.requeue}

	switch {
	case out.suspended:
		setCondition(conds, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, ReasonSuspended, "spec.suspend is true: the operator makes no Finch calls for this connection")
		if meta.FindStatusCondition(*conds, finchv1.ConditionReady) == nil {
			setCondition(conds, gen, finchv1.ConditionReady, metav1.ConditionUnknown, ReasonSuspended, "suspended before the first reconcile")
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
		rs := st.Retry
		if rs == nil || rs.ObservedGeneration != gen {
			rs = &finchv1.RetryStatus{}
		}
		rs.Failures++
		rs.ObservedGeneration = gen
		rs.LastFailureTime = metav1.Time{Time: s.now}
		rs.Reason = ReasonFinchUnavailable
		wait := r.backoff(rs.Failures)
		if out.retryAfter > 0 {
			rs.Reason = ReasonRateLimited
			wait = out.retryAfter + time.Duration(rand.Int64N(int64(time.Second)))
		}
		rs.NextAttemptTime = metav1.Time{Time: s.now.Add(wait)}
		st.Retry = rs
		if meta.FindStatusCondition(*conds, finchv1.ConditionReady) == nil {
			setCondition(conds, gen, finchv1.ConditionReady, metav1.ConditionUnknown, ReasonProgressing, "working on the first Connect session")
		}
		msg := fmt.Sprintf("attempt %d failed, retrying at %s: %v", rs.Failures, rs.NextAttemptTime.UTC().Format(time.RFC3339), out.retryErr)
		setCondition(conds, gen, finchv1.ConditionReconciling, metav1.ConditionTrue, rs.Reason, msg)
		r.event(conn, corev1.EventTypeWarning, rs.Reason, "Reconcile", msg)
		logf.FromContext(ctx).Info("transient failure, backing off", "reason", rs.Reason, "error", out.retryErr.Error(), "retryIn", wait.String())
		result.RequeueAfter = wait
	case out.stall != nil:
		st.Retry = nil
		if st.Phase == finchv1.PhasePending || st.Phase == finchv1.PhaseAwaitingConnect && out.stall.reason == ReasonDuplicateCustomerID {
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
		setCondition(conds, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, ReasonSucceeded, "the operator has done all it can for now")
		st.ObservedGeneration = gen
	}
	if !out.suspended && !out.deferred {
		setConnectionConditions(conn, gen)
	}

	r.emitTransition(orig, conn)
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
	r.phases.set(key, st.Phase)
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
		return metav1.ConditionUnknown, ReasonProgressing, "working"
	}
	switch st.Phase {
	case finchv1.PhaseAwaitingConnect:
		if st.CodeExchangeError != "" {
			return metav1.ConditionFalse, ReasonCodeRejected, st.CodeExchangeError + "; the Connect session is still open: have the employer finish Finch Connect again"
		}
		return metav1.ConditionTrue, ReasonAwaitingEmployer, fmt.Sprintf("Connect session %s is waiting for the employer until %s: send them status.session.connectURL",
			st.Session.ID, st.Session.ExpiresAt.UTC().Format(time.RFC3339))
	case finchv1.PhaseReauthRequired:
		if why, msg := reauthReason(conn); why == ReasonProductsChanged {
			return metav1.ConditionTrue, ReasonAwaitingEmployer, msg + fmt.Sprintf(" (expires %s)", st.Session.ExpiresAt.UTC().Format(time.RFC3339))
		}
		return metav1.ConditionTrue, ReasonAwaitingEmployer, fmt.Sprintf("the employer must re-authenticate connection %s: send them status.session.connectURL (expires %s)",
			st.ConnectionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339))
	case finchv1.PhaseConnected:
		return metav1.ConditionTrue, ReasonConnected, fmt.Sprintf("connection %s is connected (provider %s)", st.ConnectionID, st.ProviderID) + unapplied(conn)
	case finchv1.PhaseConnecting:
		msg := "the employer authenticated; Finch is setting up the connection"
		if cs := st.ConnectionStatus; cs != nil {
			msg = fmt.Sprintf("Finch reports %s: %s", cs.Status, orDefault(cs.Message, "waiting for access to the provider"))
		}
		return metav1.ConditionTrue, ReasonConnectionPending, msg
	default:
		if st.CodeExchangeError != "" {
			return metav1.ConditionFalse, ReasonCodeRejected, st.CodeExchangeError
		}
		return metav1.ConditionUnknown, ReasonProgressing, "working"
	}
}

// unapplied notes spec changes Finch cannot apply to a connected connection:
// products Finch did not grant after the products re-authentication, and
// customer fields, which Finch keeps from the first session (the guide: after
// connect, only POST /connect/sessions/reauthenticate changes parameters, and
// it takes no customer fields).
func unapplied(conn *finchv1.FinchConnection) string {
	st, spec := &conn.Status, &conn.Spec
	var notes []string
	if missing := missingProducts(conn, st.GrantedProducts); len(missing) > 0 {
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

// reauthReason says why a reauthentication session is published: Finch asked
// for it (ReauthRequired), or spec.products asks for products the healthy
// connection does not grant (ProductsChanged).
func reauthReason(conn *finchv1.FinchConnection) (string, string) {
	st := &conn.Status
	if cs := st.ConnectionStatus; cs != nil && cs.Status == finch.StatusConnected && st.Session != nil && st.Session.Kind == finchv1.SessionReauthenticate {
		if missing := missingProducts(conn, st.GrantedProducts); len(missing) > 0 {
			return ReasonProductsChanged, fmt.Sprintf("spec.products asks for %s, which connection %s does not grant: the employer must re-authenticate to grant them; send them status.session.connectURL",
				strings.Join(missing, ", "), st.ConnectionID)
		}
	}
	return ReasonReauthRequired, "a reauthentication session is waiting for the employer: status.session.connectURL"
}

// setConnectionConditions derives Connected and ReauthRequired from status.
func setConnectionConditions(conn *finchv1.FinchConnection, gen int64) {
	st := &conn.Status
	why, reauthMsg := reauthReason(conn)
	healthy := st.Phase == finchv1.PhaseConnected || st.Phase == finchv1.PhaseReauthRequired && why == ReasonProductsChanged
	if cs := st.ConnectionStatus; cs != nil && cs.Status == finch.StatusConnected && healthy {
		setCondition(&st.Conditions, gen, finchv1.ConditionConnected, metav1.ConditionTrue, ReasonConnected, fmt.Sprintf("Finch reports connection %s connected", st.ConnectionID))
	} else {
		why := string(st.Phase)
		if st.Phase == finchv1.PhaseAwaitingConnect {
			why = ReasonAwaitingEmployer
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
	r.event(conn, corev1.EventTypeWarning, newReady.Reason, "Reconcile", fmt.Sprintf("phase %s: %s", conn.Status.Phase, newReady.Message))
}

func (r *FinchConnectionReconciler) event(obj client.Object, typ, reason, action, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(obj, nil, typ, reason, action, "%s", truncate(msg, 1024))
	}
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

// reportPenalty wakes the FinchApp controller so the app shows Finch's per-IP
// penalty (condition RateLimited) while every call waits it out.
func (r *FinchConnectionReconciler) reportPenalty(conn *finchv1.FinchConnection) {
	if r.penalties == nil {
		return
	}
	app := &finchv1.FinchApp{}
	app.Namespace, app.Name = conn.Namespace, conn.AppName()
	select {
	case r.penalties <- event.GenericEvent{Object: app}:
	default: // already pending: one wake-up is enough
	}
}
