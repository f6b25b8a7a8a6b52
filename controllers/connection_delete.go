// Step 7: deletion.

package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/events"
	"github.com/connectops/finch-operator/internal/finch"
)

// reconcileDelete runs the deletion policy, then releases the finalizer (step 7).
func (r *FinchConnectionReconciler) reconcileDelete(ctx context.Context, conn *finchv1.FinchConnection) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(conn)
	if !controllerutil.ContainsFinalizer(conn, Finalizer) {
		r.phases.forget(key)
		return ctrl.Result{}, nil
	}
	orig := conn.DeepCopy()
	now := r.Now()
	tok, err := r.secrets().Token(ctx, conn)
	if err != nil {
		return ctrl.Result{}, err
	}
	if conn.Spec.DeletionPolicy == finchv1.DeletionPolicyDisconnect && tok.Token != "" {
		base, err := r.disconnectOnce(ctx, orig, conn, tok.Token, now)
		if err != nil {
			return r.deleteFailed(ctx, base, conn, now, err)
		}
	} else if tok.Exists && tok.Owned {
		// Retain: the token outlives this object, so re-creating the
		// FinchConnection adopts the same connection instead of a new one.
		if err := r.releaseTokenSecret(ctx, conn); err != nil {
			return ctrl.Result{}, err
		}
	}
	patch := client.MergeFrom(conn.DeepCopy())
	controllerutil.RemoveFinalizer(conn, Finalizer)
	if err := r.Patch(ctx, conn, patch); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("remove finalizer: %w", err)
	}
	r.phases.forget(key)
	return ctrl.Result{}, nil
}

// disconnectOnce disconnects after a confirmed status write of the intent,
// and returns the status the server has (the base of a later patch). The
// intent found again means the answer to an earlier call was not recorded
// (the finalizer removal after it was lost, or the operator stopped): the
// call is then repeated, which is harmless. Disconnect revokes the token
// (developer.tryfinch.com/implementation-guide/Backend-Application/Disconnect-Connections:
// "the connection is permanently terminated and the access token is
// revoked"), and Finch answers a revoked token 401 invalid_token_error
// (developer.tryfinch.com/api-reference/development-guides/errors/Error-Types),
// so a repeat reaches nothing else and reads as "already disconnected".
func (r *FinchConnectionReconciler) disconnectOnce(ctx context.Context, orig, conn *finchv1.FinchConnection, token string, now time.Time) (*finchv1.FinchConnection, error) {
	key := client.ObjectKeyFromObject(conn)
	base := orig
	pc := conn.Status.PendingCall
	repeat := pc != nil && pc.Kind == finchv1.PendingDisconnect
	if repeat {
		if m, ok := r.recall(key, pc); ok && m.ok {
			return base, nil // this process saw it succeed; only the write after it was lost
		}
	}
	if !repeat {
		pc = newIntent(finchv1.PendingDisconnect, now)
		s := &syncState{conn: conn, now: now, base: orig}
		s.writeStatus = func(ctx context.Context) error { return r.writeIntent(ctx, s) }
		if err := r.recordIntent(ctx, s, pc); err != nil {
			return s.base, err
		}
		base = s.base
	}
	r.remember(key, pc, callMemo{sent: true})
	if err := r.disconnect(ctx, conn, token, repeat); err != nil {
		conn.Status.PendingCall = nil // Finch answered (or failed): retried with a backoff
		return base, err
	}
	r.remember(key, pc, callMemo{sent: true, ok: true})
	events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonDisconnected, "Disconnect", fmt.Sprintf("disconnected connection %s at Finch", conn.Status.ConnectionID))
	return base, nil
}

func (r *FinchConnectionReconciler) disconnect(ctx context.Context, conn *finchv1.FinchConnection, token string, repeat bool) error {
	// No namespace admission check for a ClusterFinchApp: /disconnect
	// authenticates with the connection's own token, which its namespace
	// holds anyway, so a namespace no longer allowed may still clean up.
	app := finchv1.NewAppObject(conn.AppKey())
	if err := r.Get(ctx, conn.AppKey(), app); err != nil {
		return fmt.Errorf("get %s: %w", conn.AppDescription(), err)
	}
	resolved, err := r.Apps.Get(ctx, app)
	if err != nil {
		return err
	}
	err = resolved.Client.Disconnect(ctx, token)
	switch {
	case err == nil:
	case finch.IsInvalidToken(err):
		// Already revoked (a retry after a lost response, or disconnected
		// elsewhere): nothing left to disconnect.
	case finch.IsUnauthorized(err) && repeat:
		// Our own earlier disconnect, whose answer was not recorded, revoked it.
	case finch.IsUnauthorized(err):
		// Finch's docs name no error for /disconnect; any 401 means the token
		// is no longer accepted, and retrying cannot change that. Let the
		// deletion finish rather than wedge it, and say so.
		events.Record(r.Recorder, conn, corev1.EventTypeWarning, finchv1.ReasonDisconnectFailed, "Disconnect", fmt.Sprintf(
			"Finch no longer accepts the access token (%s), so connection %s could not be disconnected from here; the FinchConnection is deleted anyway: check the connection in the Finch dashboard",
			finchMessage(err), conn.Status.ConnectionID))
	default:
		return fmt.Errorf("disconnect: %w", err)
	}
	return nil
}

// deleteFailed records a failed disconnect and backs off; after
// maxDeleteFailures it reports Stalled with how to let go by hand.
func (r *FinchConnectionReconciler) deleteFailed(ctx context.Context, orig, conn *finchv1.FinchConnection, now time.Time, cause error) (ctrl.Result, error) {
	st := &conn.Status
	rs, wait := r.recordFailure(conn, now, finchv1.ReasonDisconnectFailed, 0)
	msg := fmt.Sprintf("could not disconnect at Finch (attempt %d): %v", rs.Failures, cause)
	if rs.Failures >= maxDeleteFailures {
		msg += fmt.Sprintf(". Still retrying every %s. To delete without disconnecting: kubectl patch finchconnection %s -n %s --type=merge -p '{\"metadata\":{\"finalizers\":null}}' (then disconnect in the Finch dashboard)",
			wait.Round(time.Second), conn.Name, conn.Namespace)
		setCondition(&st.Conditions, conn.Generation, finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonDisconnectFailed, msg)
		setCondition(&st.Conditions, conn.Generation, finchv1.ConditionReady, metav1.ConditionFalse, finchv1.ReasonDisconnectFailed, msg)
	}
	events.Record(r.Recorder, conn, corev1.EventTypeWarning, finchv1.ReasonDisconnectFailed, "Disconnect", msg)
	return r.patchStatus(ctx, orig, conn, ctrl.Result{RequeueAfter: wait})
}

// releaseTokenSecret removes this connection's owner reference from the token Secret.
func (r *FinchConnectionReconciler) releaseTokenSecret(ctx context.Context, conn *finchv1.FinchConnection) error {
	sec := &corev1.Secret{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: conn.Namespace, Name: conn.TokenSecretName()}, sec); err != nil {
		return client.IgnoreNotFound(err)
	}
	patch := client.MergeFrom(sec.DeepCopy())
	if err := controllerutil.RemoveOwnerReference(conn, sec, r.Scheme()); err != nil {
		return nil // not an owner: nothing to release
	}
	if err := r.Patch(ctx, sec, patch); err != nil {
		return fmt.Errorf("release token Secret: %w", err)
	}
	return nil
}
