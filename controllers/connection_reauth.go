// Step 6: reauthentication sessions.

package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/events"
	"github.com/connectops/finch-operator/internal/finch"
)

// settleSession retires the published session, or a reauthentication
// intent, once a token shows it was used, and keeps a live reauthentication
// session published until it is. Reads s.token; writes status.session and
// status.pendingCall. What is left decides the phase (tokenPhase).
func (r *FinchConnectionReconciler) settleSession(_ context.Context, s *syncState) outcome {
	if s.token.Token == "" {
		return nil
	}
	conn, st := s.conn, &s.conn.Status
	if pc := pendingReauth(st); pc != nil && pc.ReplacesTokenVersion != s.token.Version {
		// A new token after the intent: the employer completed the
		// session whose link was not recorded.
		st.PendingCall = nil
		events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonReauthCompleted, "Reauthenticate", "the employer re-authenticated; the new access token replaced the old one")
	}
	sess := st.Session
	if sess == nil {
		return nil
	}
	switch {
	case sess.Kind == finchv1.SessionReauthenticate && replacedToken(sess) != s.token.Version:
		// A new token arrived after the reauth session: the employer finished it.
		st.Session = nil
		events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonReauthCompleted, "Reauthenticate", "the employer re-authenticated; the new access token replaced the old one")
	case sess.Kind == finchv1.SessionReauthenticate && s.now.Before(sess.ExpiresAt.Time):
		// A live reauth session stays published until used.
	case sess.Kind == finchv1.SessionConnect || tokenPhase(conn, s.now) != finchv1.PhaseReauthRequired:
		st.Session = nil // the employer finished Connect; the link is spent
	}
	return nil
}

// tokenPhase is the phase of a connection with a token once its sessions
// are settled (settleSession): ReauthRequired while a reauthentication
// session is live, recorded or possibly issued (status.pendingCall, until
// it would expire), else what Finch's connection status means.
func tokenPhase(conn *finchv1.FinchConnection, now time.Time) finchv1.Phase {
	st := &conn.Status
	if pc := pendingReauth(st); pc != nil && now.Before(intentExpiry(conn, pc)) {
		return finchv1.PhaseReauthRequired
	}
	if sess := st.Session; sess != nil && sess.Kind == finchv1.SessionReauthenticate && now.Before(sess.ExpiresAt.Time) {
		return finchv1.PhaseReauthRequired
	}
	return phaseForStatus(st.ConnectionStatus)
}

// replacedToken is the token version a reauthentication session replaces
// (sessions recorded before replacesTokenVersion existed kept it in requestHash).
func replacedToken(sess *finchv1.Session) string {
	if sess.ReplacesTokenVersion != "" {
		return sess.ReplacesTokenVersion
	}
	return sess.RequestHash
}

// reauthenticate asks for a reauthentication session when Finch says the
// connection needs one, when annotated, or when spec.products asks for more
// than the connection grants (the guide: parameters changed after connect
// need POST /connect/sessions/reauthenticate; asked once per products list,
// status.reauthProducts). Reads s.token, s.requests, the phase (tokenPhase)
// and status.grantedProducts; writes what ensureReauthSession writes.
func (r *FinchConnectionReconciler) reauthenticate(ctx context.Context, s *syncState) outcome {
	conn, st := s.conn, &s.conn.Status
	ask := reauthAsk{missing: missingProducts(conn)}
	if s.token.Token == "" {
		// Asked for, and the connection exists at Finch but its token is not
		// here: a reauthentication session yields a new code, hence a token.
		return r.ensureReauthSession(ctx, s, ask)
	}
	phase, force := tokenPhase(conn, s.now), s.requests.forceReauth()
	if phase == finchv1.PhaseConnected && !force && len(ask.missing) > 0 && !finch.SameProducts(st.ReauthProducts, conn.ProductNames()) {
		ask.forProducts = true
		return r.ensureReauthSession(ctx, s, ask)
	}
	if phase == finchv1.PhaseReauthRequired || force {
		return r.ensureReauthSession(ctx, s, ask)
	}
	return nil
}

// reauthAsk is what a reauthentication session is asked for.
type reauthAsk struct {
	missing     []string // what spec.products asks for that the connection does not grant
	forProducts bool     // asked because of missing: recorded in status.reauthProducts with the intent
}

// ensureReauthSession mints a reauthentication session unless a live one is
// recorded, or one may have been issued without being recorded: the endpoint
// is not idempotent (step 6), so the call follows a confirmed write of its
// intent. Reads s.token, s.app and s.requests; writes status.pendingCall
// (by an intent write), status.session and status.reauthProducts.
func (r *FinchConnectionReconciler) ensureReauthSession(ctx context.Context, s *syncState, ask reauthAsk) outcome {
	conn, st := s.conn, &s.conn.Status
	if sess := st.Session; sess != nil && sess.Kind == finchv1.SessionReauthenticate {
		if s.now.Before(sess.ExpiresAt.Time) {
			return done{phase: finchv1.PhaseReauthRequired, requeue: sess.ExpiresAt.Sub(s.now) + time.Second}
		}
		countSessionExpired(s.conn)
		events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonSessionExpired, "Reauthenticate", fmt.Sprintf("reauthentication session %s expired unused", sess.ID))
	}
	if o := r.unrecordedReauth(s); o != nil {
		return o
	}
	if o := deferForBudget(s, finch.EndpointReauthSession); o != nil {
		return o
	}
	if st.ConnectionID == "" {
		return stalled(finchv1.ReasonNotConnected, "a reauthentication session needs the connection ID, which is not known yet: provide the token so it can be introspected")
	}
	redirect := s.app.RedirectURIFor(conn)
	minutes := conn.SessionMinutes()
	req := finch.ReauthRequest{ConnectionID: st.ConnectionID, MinutesToExpire: &minutes, Products: conn.ProductNames()}
	if redirect != "" {
		req.RedirectURI = &redirect
	}
	key := client.ObjectKeyFromObject(conn)
	prevProducts := st.ReauthProducts
	if ask.forProducts {
		// Written with the intent: a session that may exist for this list
		// is not asked for again (and restored below if none was issued).
		st.ReauthProducts = conn.ProductNames()
	}
	if st.Session != nil && st.Session.Kind == finchv1.SessionReauthenticate {
		st.Session = nil // expired (reported above): written away with the intent
	}
	intent := newIntent(finchv1.PendingReauthenticate, s.now)
	intent.ExpiresAt = &metav1.Time{Time: intent.StartedAt.Add(time.Duration(minutes) * time.Minute)}
	intent.RedirectURI, intent.ReplacesTokenVersion = redirect, s.token.Version
	if err := r.recordIntent(ctx, s, intent); err != nil {
		st.ReauthProducts = prevProducts
		return retry(fmt.Errorf("create reauthentication session: %w", err))
	}
	r.remember(key, intent, callMemo{sent: true})
	resp, err := s.app.Client.Reauthenticate(ctx, req)
	if err != nil {
		// Finch answered, or the request failed: as crossplane records
		// external-create-failed, the call is over and may be retried. A
		// session Finch issued before a lost response was never published,
		// so no employer holds its link.
		st.PendingCall, st.ReauthProducts = nil, prevProducts
		r.remember(key, intent, callMemo{sent: true})
		return r.finchError(s, "create reauthentication session", err)
	}
	if st.Phase != finchv1.PhaseReauthRequired {
		countReauthRequired(s.conn)
	}
	expires := s.now.Add(time.Duration(minutes) * time.Minute)
	st.Session = &finchv1.Session{
		ID: resp.SessionID, ConnectURL: s.app.PublishedConnectURL(resp.ConnectURL, resp.SessionID, redirect, expires), Kind: finchv1.SessionReauthenticate,
		RedirectURI: redirect, Products: req.Products,
		IssuedAt:  metav1.Time{Time: s.now},
		ExpiresAt: metav1.Time{Time: expires},
		// The token the reauth replaces: a different token means it was completed.
		ReplacesTokenVersion: s.token.Version,
	}
	st.PendingCall = nil
	r.remember(key, intent, callMemo{sent: true, ok: true, session: st.Session.DeepCopy()})
	countSessionIssued(s.conn, finchv1.SessionReauthenticate)
	msg := fmt.Sprintf("Finch needs the employer to re-authenticate connection %s: send them status.session.connectURL (expires %s)",
		st.ConnectionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339))
	if m, ok := productsChanged(conn, ask.missing); ok {
		msg = m + fmt.Sprintf(" (expires %s)", st.Session.ExpiresAt.UTC().Format(time.RFC3339))
	}
	events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonReauthSession, "Reauthenticate", msg)
	return done{phase: finchv1.PhaseReauthRequired, requeue: st.Session.ExpiresAt.Sub(s.now) + time.Second}
}
