// Steps 1-3: issue or refresh the Connect session.

package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/events"
	"github.com/connectops/finch-operator/internal/finch"
)

// connectWithoutToken: no token here, so issue or refresh the Connect
// session (steps 1-3). Reads s.token and s.requests; writes status.session
// and clears status.tokenSecretRef and tokenVersion.
func (r *FinchConnectionReconciler) connectWithoutToken(ctx context.Context, s *syncState) outcome {
	if s.token.Token != "" {
		return nil
	}
	conn, st := s.conn, &s.conn.Status
	st.TokenSecretRef = nil
	st.TokenVersion = ""
	if st.ConnectionID != "" && (s.requests.forceReauth() || reauthUnderway(st, s.now)) {
		return nil // a reauthentication session (step 6) gets the token back
	}
	if c := meta.FindStatusCondition(st.Conditions, finchv1.ConditionStalled); c != nil && c.Status == metav1.ConditionTrue &&
		c.ObservedGeneration == conn.Generation && !s.requests.forceIntrospect() &&
		(c.Reason == finchv1.ReasonConnectionExists || c.Reason == finchv1.ReasonFinchRejected) {
		// Finch already answered this spec; asking again would loop.
		return stalling{reason: reason{c.Reason, c.Message}}
	}
	return r.ensureConnectSession(ctx, s)
}

// ensureConnectSession creates or refreshes the Connect session. Finch returns
// the same session_id for the same customer_id until the employer connects,
// so a lost status write costs one extra call, never a duplicate connection.
func (r *FinchConnectionReconciler) ensureConnectSession(ctx context.Context, s *syncState) outcome {
	conn, st := s.conn, &s.conn.Status
	req := sessionRequest(conn, s.app.RedirectURIFor(conn))
	hash := requestHash(req)
	sess := st.Session
	if sess != nil && sess.Kind == finchv1.SessionConnect && sess.RequestHash == hash && !s.requests.forceIntrospect() {
		if refresh := refreshTime(sess); s.now.Before(refresh) {
			return done{phase: finchv1.PhaseAwaitingConnect, requeue: jitterDown(refresh.Sub(s.now))}
		}
	}
	if o := deferForBudget(s, finch.EndpointCreateSession); o != nil {
		return o
	}
	if sess != nil && !s.now.Before(sess.ExpiresAt.Time) {
		countSessionExpired(s.conn)
		events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonSessionExpired, "CreateSession", fmt.Sprintf("session %s expired before the employer connected", sess.ID))
	}
	resp, err := s.app.Client.CreateSession(ctx, req)
	if err != nil {
		if connID, ok := finch.ConnectionAlreadyExists(err); ok {
			st.ConnectionID = connID
			st.Session = nil
			o := stalled(finchv1.ReasonConnectionExists,
				"Finch already has connection %s for customer %q, but Secret %s holds no access token for it. Put its token there (key %s) to adopt it, or set annotation %s to send the employer a reauthentication session",
				connID, conn.Spec.CustomerID, conn.TokenSecretName(), finchv1.AccessTokenKey, finchv1.ReauthRequestedAtAnnotation)
			o.phase = finchv1.PhaseError
			return o
		}
		return r.finchError(s, "create Connect session", err)
	}
	if st.ConnectionStatus != nil && st.ConnectionStatus.Status == finch.StatusDisconnected {
		// Starting over after a disconnect: the old connection is gone for good.
		clearConnection(st)
	}
	refreshed := sess != nil && sess.ID == resp.SessionID
	minutes := time.Duration(conn.SessionMinutes()) * time.Minute
	redirect := ptr.Deref(req.RedirectURI, "")
	expires := s.now.Add(minutes)
	st.Session = &finchv1.Session{
		ID: resp.SessionID, ConnectURL: s.app.PublishedConnectURL(resp.ConnectURL, resp.SessionID, redirect, expires), Kind: finchv1.SessionConnect,
		IssuedAt: metav1.Time{Time: s.now}, ExpiresAt: metav1.Time{Time: expires}, RequestHash: hash,
		RedirectURI: redirect, Products: req.Products,
	}
	if st.FirstSessionTime == nil {
		st.FirstSessionTime = &metav1.Time{Time: s.now}
	}
	countSessionIssued(s.conn, finchv1.SessionConnect)
	if refreshed {
		events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonSessionRefreshed, "CreateSession", fmt.Sprintf("refreshed Connect session %s until %s", resp.SessionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339)))
	} else {
		events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonSessionCreated, "CreateSession", fmt.Sprintf("created Connect session %s (expires %s): send the employer status.session.connectURL", resp.SessionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	return done{phase: finchv1.PhaseAwaitingConnect, requeue: jitterDown(refreshTime(st.Session).Sub(s.now))}
}

// reauthUnderway: a reauthentication session is published and live, or one
// may have been issued (its intent is recorded): the connection waits for it
// rather than asking for a Connect session Finch would refuse.
func reauthUnderway(st *finchv1.FinchConnectionStatus, now time.Time) bool {
	if sess := st.Session; sess != nil && sess.Kind == finchv1.SessionReauthenticate && now.Before(sess.ExpiresAt.Time) {
		return true
	}
	return pendingReauth(st) != nil
}

func clearConnection(st *finchv1.FinchConnectionStatus) {
	st.ConnectionID, st.ProviderID, st.ConnectionType, st.ClientType = "", "", "", ""
	st.AccountID, st.CompanyID = "", ""
	st.ConnectionStatus, st.AuthenticationMethods, st.GrantedProducts = nil, nil, nil
	st.ConnectedAt, st.LastIntrospectionTime = nil, nil
	st.InitialSync = nil // a new connection gets its own initial syncs
}

func sessionRequest(conn *finchv1.FinchConnection, redirect string) finch.SessionRequest {
	spec := conn.Spec
	minutes := conn.SessionMinutes()
	req := finch.SessionRequest{
		CustomerID: spec.CustomerID, CustomerName: spec.CustomerName, Products: conn.ProductNames(),
		MinutesToExpire: &minutes,
	}
	if spec.CustomerEmail != "" {
		req.CustomerEmail = &spec.CustomerEmail
	}
	if spec.Integration != nil {
		req.Integration = &finch.Integration{Provider: spec.Integration.Provider}
		if m := string(spec.Integration.AuthMethod); m != "" {
			req.Integration.AuthMethod = &m
		}
	}
	if spec.Manual {
		manual := true
		req.Manual = &manual
	}
	if redirect != "" {
		req.RedirectURI = &redirect
	}
	if spec.Sandbox != "" {
		sb := string(spec.Sandbox)
		req.Sandbox = &sb
	}
	if rk := spec.Recordkeeping; rk != nil {
		req.Recordkeeping = &finch.Recordkeeping{Recordkeeper: string(rk.Recordkeeper)}
		if rk.PlanID != "" {
			req.Recordkeeping.PlanID = &rk.PlanID
		}
	}
	return req
}

// requestHash fingerprints the session parameters; a change refreshes the session.
func requestHash(req finch.SessionRequest) string {
	b, _ := json.Marshal(req)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// refreshTime is when an unused Connect session is refreshed: a tenth of its
// lifetime (at most an hour) before it expires.
func refreshTime(sess *finchv1.Session) time.Time {
	margin := sess.ExpiresAt.Sub(sess.IssuedAt.Time) / 10
	if margin > time.Hour {
		margin = time.Hour
	}
	return sess.ExpiresAt.Add(-margin)
}

// jitterDown shortens d by up to 5% so requeues of many objects spread out,
// never past the deadline and never to zero.
func jitterDown(d time.Duration) time.Duration {
	if d <= time.Second {
		return time.Second
	}
	return d - time.Duration(rand.Int64N(int64(d/20)+1))
}
