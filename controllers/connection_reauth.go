// Step 6: reauthentication sessions.

package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// ensureReauthSession mints a reauthentication session unless a live one is
// recorded: the endpoint is not idempotent (step 6).
func (r *FinchConnectionReconciler) ensureReauthSession(ctx context.Context, s *syncState) outcome {
	conn, st := s.conn, &s.conn.Status
	if sess := st.Session; sess != nil && sess.Kind == finchv1.SessionReauthenticate {
		if s.now.Before(sess.ExpiresAt.Time) {
			st.Phase = finchv1.PhaseReauthRequired
			return outcome{requeue: sess.ExpiresAt.Sub(s.now) + time.Second}
		}
		sessionsExpired.Inc()
		r.event(conn, corev1.EventTypeNormal, ReasonSessionExpired, "Reauthenticate", fmt.Sprintf("reauthentication session %s expired unused", sess.ID))
	}
	if o, wait := deferForBudget(s, finch.EndpointReauthSession); wait {
		return o
	}
	if st.ConnectionID == "" {
		return stalled(ReasonNotConnected, "a reauthentication session needs the connection ID, which is not known yet: provide the token so it can be introspected")
	}
	redirect := s.app.RedirectURIFor(conn)
	minutes := int(conn.Spec.MinutesToExpire)
	if minutes == 0 {
		minutes = 20160
	}
	req := finch.ReauthRequest{ConnectionID: st.ConnectionID, MinutesToExpire: &minutes, Products: products(conn)}
	if redirect != "" {
		req.RedirectURI = &redirect
	}
	resp, err := s.app.Client.Reauthenticate(ctx, req)
	if err != nil {
		return r.finchError(s, "create reauthentication session", err)
	}
	if st.Phase != finchv1.PhaseReauthRequired {
		reauthsRequired.Inc()
	}
	st.Session = &finchv1.Session{
		ID: resp.SessionID, ConnectURL: s.app.PublishedConnectURL(resp.ConnectURL, resp.SessionID, redirect), Kind: finchv1.SessionReauthenticate,
		RedirectURI: redirect, Products: req.Products,
		IssuedAt:  metav1.Time{Time: s.now},
		ExpiresAt: metav1.Time{Time: s.now.Add(time.Duration(minutes) * time.Minute)},
		// The token the reauth replaces: a different token means it was completed.
		RequestHash: s.token.version,
	}
	st.Phase = finchv1.PhaseReauthRequired
	if s.productsReauth {
		// Persisted with the session, never without it: a deferred or failed
		// call must be retried, a minted one must not be repeated.
		st.ReauthProducts = products(conn)
	}
	sessionsIssued.WithLabelValues(string(finchv1.SessionReauthenticate)).Inc()
	msg := fmt.Sprintf("Finch needs the employer to re-authenticate connection %s: send them status.session.connectURL (expires %s)",
		st.ConnectionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339))
	if why, m := reauthReason(conn); why == ReasonProductsChanged {
		msg = m + fmt.Sprintf(" (expires %s)", st.Session.ExpiresAt.UTC().Format(time.RFC3339))
	}
	r.event(conn, corev1.EventTypeNormal, ReasonReauthSession, "Reauthenticate", msg)
	return outcome{requeue: st.Session.ExpiresAt.Sub(s.now) + time.Second}
}
