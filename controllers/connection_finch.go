// Calling Finch: the request budget before a call, the class of its error after.

package controllers

import (
	"errors"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/event"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// maxBudgetBlock is the longest a reconcile blocks a worker waiting for the
// app's Finch budget; beyond it the pass comes back when budget frees up, so
// a backlog of one kind of call never starves the others.
const maxBudgetBlock = 5 * time.Second

// deferForBudget defers a pass whose Finch call would wait long for budget
// (nil: call now). The app admits the call once (apps.App.Admit): a place in
// the Finch application's fair line for the endpoint, so a backlog comes back
// one per free slot and leaves the workers to employers' hand-offs, or the
// per-host IP guard's wait. Reads s.app and s.conn's name; takes a place in
// the line.
func deferForBudget(s *syncState, endpoint string) outcome {
	d, inLine := s.app.Admit(endpoint, s.conn.Namespace, s.conn.Namespace+"/"+s.conn.Name, maxBudgetBlock)
	if d == 0 {
		return nil
	}
	return deferred{requeue: d, inLine: inLine, wait: &reason{finchv1.ReasonBudgetWait, fmt.Sprintf("waiting for %s's request budget for %s (spec.rateLimit); next attempt in about %s",
		s.conn.AppDescription(), endpoint, max(d, time.Second).Round(time.Second))}}
}

// finchError sorts a failed Finch call into Stalled (4xx: the request itself
// is wrong) or a transient retry (429, 5xx, network).
func (r *FinchConnectionReconciler) finchError(s *syncState, what string, err error) outcome {
	switch finch.Classify(err) {
	case finch.ClassTerminal:
		if finch.IsInvalidClient(err) {
			s.app.RejectCredentials()
			return stalled(finchv1.ReasonInvalidCredentials, "%s", s.app.CredentialsRejectedMessage())
		}
		return stalled(finchv1.ReasonFinchRejected, "Finch rejected the request to %s: %s. Fix the FinchConnection spec and apply it again", what, finchMessage(err))
	case finch.ClassRateLimited:
		after, _ := finch.RateLimited(err)
		if finch.IsIPRateLimited(err) {
			r.reportPenalty(s.conn)
		}
		return retrying{err: fmt.Errorf("%s: %w", what, err), after: after}
	default:
		return retry(fmt.Errorf("%s: %w", what, err))
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

// reportPenalty wakes the FinchApp controller so the app shows Finch's per-IP
// penalty (condition RateLimited) while every call waits it out.
func (r *FinchConnectionReconciler) reportPenalty(conn *finchv1.FinchConnection) {
	ch := r.penalties
	if conn.UsesClusterApp() {
		ch = r.clusterPenalties
	}
	if ch == nil {
		return
	}
	key := conn.AppKey()
	app := finchv1.NewAppObject(key)
	app.SetNamespace(key.Namespace)
	app.SetName(key.Name)
	select {
	case ch <- event.GenericEvent{Object: app}:
	default: // already pending: one wake-up is enough
	}
}
