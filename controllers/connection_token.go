// Steps 4-5: exchange codes, read tokens, introspect.

package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// exchangeCode handles the embedded flow: the customer's backend handed over
// an authorization code in a labelled Secret (step 4).
func (r *FinchConnectionReconciler) exchangeCode(ctx context.Context, s *syncState, codes []corev1.Secret) outcome {
	conn, st := s.conn, &s.conn.Status
	log := logf.FromContext(ctx)
	// Use the newest code; older ones are stale by definition.
	codeSecret := codes[len(codes)-1]
	code := string(codeSecret.Data[finchv1.CodeKey])

	tok, err := r.secrets().readToken(ctx, conn)
	if err != nil {
		return outcome{retryErr: err}
	}
	if tok.token != "" && tok.codeUID == string(codeSecret.UID) {
		// Already exchanged; only the clean-up was interrupted.
		r.deleteCodeSecrets(ctx, codes)
		return outcome{}
	}
	if !tok.writable() {
		// Check before spending the single-use code: a token that cannot be
		// stored would be lost.
		return stalled(ReasonTokenSecretNotOwned,
			"Secret %s exists but is neither owned by this FinchConnection nor labelled %s=%s; label it (or delete it) so the operator may store the new token, then hand over a fresh code",
			conn.TokenSecretName(), finchv1.ConnectionLabel, conn.Name)
	}
	if code == "" {
		r.deleteCodeSecrets(ctx, codes)
		st.CodeExchangeError = fmt.Sprintf("Secret %s has no %q key", codeSecret.Name, finchv1.CodeKey)
		r.event(conn, corev1.EventTypeWarning, ReasonCodeRejected, "ExchangeCode", st.CodeExchangeError)
		return outcome{}
	}
	if err := r.ensureFinalizer(ctx, conn); err != nil {
		return outcome{retryErr: err}
	}
	// Send exactly the redirect_uri of the session the code came from, none
	// when it had none (RFC 6749 section 4.1.3; Finch sends redirect_uri only in
	// the redirect flow). The code was produced by the session published now.
	var redirect, sessionID string
	if st.Session != nil {
		redirect, sessionID = st.Session.RedirectURI, st.Session.ID
	}
	resp, err := s.app.Client.ExchangeCode(ctx, finch.TokenRequest{Code: code, RedirectURI: redirect})
	if err != nil {
		if finch.Classify(err) == finch.ClassTerminal {
			// A bad, used or expired code never becomes good: drop it and say so.
			r.deleteCodeSecrets(ctx, codes)
			if finch.IsInvalidGrant(err) && tok.token != "" {
				// Most likely our own earlier exchange of this code, whose
				// clean-up was interrupted: the token is already stored.
				return outcome{}
			}
			if finch.IsInvalidClient(err) {
				s.app.RejectCredentials()
			}
			st.CodeExchangeError = fmt.Sprintf("Finch rejected the authorization code from Secret %s: %s", codeSecret.Name, finchMessage(err))
			r.event(conn, corev1.EventTypeWarning, ReasonCodeRejected, "ExchangeCode", st.CodeExchangeError+"; have the employer finish Finch Connect again and hand over the new code")
			if st.Phase == "" {
				st.Phase = finchv1.PhasePending
			}
			return outcome{}
		}
		return r.finchError(s, "exchange authorization code", err)
	}
	if err := storeToken(ctx, r.Client, r.APIReader, conn, resp, "embedded", string(codeSecret.UID), sessionID); err != nil {
		log.Error(err, "token lost: the code was exchanged but the token could not be stored", "secret", conn.TokenSecretName())
		r.event(conn, corev1.EventTypeWarning, ReasonTokenStoreFailed, "StoreToken",
			fmt.Sprintf("the access token could not be stored in Secret %s: %v; the employer must re-authenticate", conn.TokenSecretName(), err))
		r.deleteCodeSecrets(ctx, codes)
		return outcome{retryErr: err}
	}
	r.deleteCodeSecrets(ctx, codes)
	st.CodeExchangeError = ""
	recordTokenResponse(st, resp)
	st.TokenSecretRef = &finchv1.LocalObjectReference{Name: conn.TokenSecretName()}
	r.event(conn, corev1.EventTypeNormal, ReasonTokenStored, "ExchangeCode",
		fmt.Sprintf("exchanged the authorization code; access token stored in Secret %s", conn.TokenSecretName()))
	// The token Secret's watch event brings the next pass (introspection).
	return outcome{}
}

func (r *FinchConnectionReconciler) deleteCodeSecrets(ctx context.Context, codes []corev1.Secret) {
	for i := range codes {
		if err := r.Delete(ctx, &codes[i]); err != nil && !apierrors.IsNotFound(err) {
			logf.FromContext(ctx).Error(err, "delete code Secret", "secret", codes[i].Name)
		}
	}
}

// recordTokenResponse keeps the non-secret facts of a token exchange.
func recordTokenResponse(st *finchv1.FinchConnectionStatus, resp *finch.TokenResponse) {
	st.ConnectionID = resp.ConnectionID
	st.ProviderID = resp.ProviderID
	st.ConnectionType = resp.ConnectionType
	st.ClientType = resp.ClientType
	st.GrantedProducts = resp.Products
	st.AccountID = resp.AccountID
	st.CompanyID = resp.CompanyID
}

// syncWithToken: a token exists (step 5), maybe reauth is needed (step 6).
func (r *FinchConnectionReconciler) syncWithToken(ctx context.Context, s *syncState) outcome {
	conn, st := s.conn, &s.conn.Status
	st.TokenSecretRef = &finchv1.LocalObjectReference{Name: conn.TokenSecretName()}
	st.CodeExchangeError = ""
	// The finalizer lets deletion release an owned token Secret (Retain) or
	// disconnect (Disconnect); a foreign, unlabelled Secret needs it only for the latter.
	if s.token.owned || s.token.labelled || conn.Spec.DeletionPolicy == finchv1.DeletionPolicyDisconnect {
		if err := r.ensureFinalizer(ctx, conn); err != nil {
			return outcome{retryErr: err}
		}
	}
	newToken := st.TokenVersion != s.token.version
	if s.webhookStatus == "reauth" && !newToken {
		// A signed webhook said so: go straight to the reauth session.
		st.ConnectionStatus = &finchv1.ConnectionStatus{Status: "reauth", Message: "Finch reported (account.updated webhook) that the employer must re-authenticate"}
	} else if newToken || s.forceIntrospect || st.LastIntrospectionTime == nil || !s.now.Before(r.nextIntrospection(s)) {
		if o, stop := r.introspect(ctx, s); stop {
			return o
		}
	}

	phase := phaseForStatus(st.ConnectionStatus)
	if sess := st.Session; sess != nil {
		switch {
		case sess.Kind == finchv1.SessionReauthenticate && sess.RequestHash != s.token.version:
			// A new token arrived after the reauth session: the employer finished it.
			st.Session = nil
			r.event(conn, corev1.EventTypeNormal, ReasonReauthCompleted, "Reauthenticate", "the employer re-authenticated; the new access token replaced the old one")
		case sess.Kind == finchv1.SessionReauthenticate && s.now.Before(sess.ExpiresAt.Time):
			phase = finchv1.PhaseReauthRequired // a live reauth session stays published until used
		case sess.Kind == finchv1.SessionConnect || phase != finchv1.PhaseReauthRequired:
			st.Session = nil // the employer finished Connect; the link is spent
		}
	}
	if phase == finchv1.PhaseConnected && !s.forceReauth {
		// The guide: parameters changed after the employer connected need
		// POST /connect/sessions/reauthenticate. Ask once per products list.
		if missing := missingProducts(conn, st.GrantedProducts); len(missing) > 0 && !sameProducts(st.ReauthProducts, products(conn)) {
			s.productsReauth = true // recorded once the session is minted
			return r.ensureReauthSession(ctx, s)
		}
	}
	if phase == finchv1.PhaseReauthRequired || s.forceReauth {
		return r.ensureReauthSession(ctx, s)
	}
	st.Phase = phase
	switch phase {
	case finchv1.PhaseError:
		cs := st.ConnectionStatus
		if isKnownStatus(cs.Status) {
			return stalled(ReasonEmployerAction, "Finch reports %s: %s. The employer must fix this with their provider; the operator re-checks every %s",
				cs.Status, orDefault(cs.Message, "no message"), s.app.IntrospectionInterval())
		}
		return stalled(ReasonUnknownStatus, "Finch reports an unknown connection status %q (%s); kept verbatim, re-checked every %s",
			cs.Status, cs.Message, s.app.IntrospectionInterval())
	case finchv1.PhaseDisconnected:
		return stalled(ReasonDisconnected, "connection %s was disconnected at Finch and cannot come back; delete Secret %s to start a new Connect session (it creates a new connection ID), or delete this FinchConnection",
			st.ConnectionID, conn.TokenSecretName())
	}
	return outcome{requeue: jitterDown(r.nextIntrospection(s).Sub(s.now))}
}

// introspect calls GET /introspect and records what Finch says.
func (r *FinchConnectionReconciler) introspect(ctx context.Context, s *syncState) (outcome, bool) {
	conn, st := s.conn, &s.conn.Status
	if o, wait := deferForBudget(s, finch.EndpointIntrospect); wait {
		return o, true
	}
	info, err := s.app.Client.Introspect(ctx, s.token.token)
	switch {
	case err == nil:
	case finch.IsReauthRequired(err):
		st.ConnectionStatus = &finchv1.ConnectionStatus{Status: "reauth", Message: finchMessage(err)}
		st.LastIntrospectionTime = &metav1.Time{Time: s.now}
		st.TokenVersion = s.token.version
		return outcome{}, false
	case finch.IsInvalidToken(err):
		st.LastIntrospectionTime = &metav1.Time{Time: s.now}
		st.TokenVersion = s.token.version
		if s.webhookStatus == "disconnected" || (st.ConnectionStatus != nil && st.ConnectionStatus.Status == "disconnected") {
			st.ConnectionStatus = &finchv1.ConnectionStatus{Status: "disconnected", Message: "the access token was revoked"}
			st.Phase = finchv1.PhaseDisconnected
			return stalled(ReasonDisconnected, "connection %s was disconnected at Finch; delete Secret %s to start a new Connect session (a new connection ID), or delete this FinchConnection",
				st.ConnectionID, conn.TokenSecretName()), true
		}
		st.Phase = finchv1.PhaseError
		return stalled(ReasonTokenRevoked, "Finch rejected the access token in Secret %s (revoked: disconnected, or re-authenticated elsewhere). Put a valid token in the Secret, set annotation %s to issue a reauthentication session, or delete the Secret if the connection was disconnected",
			conn.TokenSecretName(), finchv1.ReauthRequestedAtAnnotation), true
	default:
		return r.finchError(s, "introspect", err), true
	}
	wasConnected := st.ConnectionStatus != nil && st.ConnectionStatus.Status == finch.StatusConnected
	st.ConnectionID = info.ConnectionID
	cs := &finchv1.ConnectionStatus{Status: info.Status(), Message: info.ConnectionStatus.Message}
	if info.StatusDerived() {
		// The guide's sandbox example has only authentication_methods[].connection_status.
		cs.Message = orDefault(cs.Message, "derived from authentication_methods (no top-level connection_status)")
	}
	st.Entities = nil
	for _, e := range info.Entities {
		st.Entities = append(st.Entities, finchv1.EntityStatus{ID: e.ID, Name: e.Name, SourceID: e.SourceID, Status: e.Status})
		// An entity Finch wants re-authenticated is the connection's
		// reauth (finch-api-go account.go: IntrospectionEntity.Status).
		if e.Status == finch.StatusReauth && cs.Status != finch.StatusReauth && cs.Status != finch.StatusDisconnected {
			cs.Status = finch.StatusReauth
			cs.Message = fmt.Sprintf("entity %s (%s) needs re-authentication", e.ID, orDefault(e.Name, "unnamed"))
		}
	}
	st.FinchCustomerName, st.FinchCustomerEmail = info.CustomerName, info.CustomerEmail
	if t := info.ConnectionStatus.LastSuccessfulSync; t != nil {
		cs.LastSuccessfulSync = &metav1.Time{Time: *t}
	}
	st.ConnectionStatus = cs
	st.AuthenticationMethods = nil
	for _, m := range info.AuthenticationMethods {
		am := finchv1.AuthenticationMethodStatus{Type: m.Type}
		if m.ConnectionStatus != nil {
			am.Status, am.Message = m.ConnectionStatus.Status, m.ConnectionStatus.Message
		}
		st.AuthenticationMethods = append(st.AuthenticationMethods, am)
	}
	st.ProviderID = orDefault(info.ProviderID, info.PayrollProviderID)
	st.ConnectionType = info.ConnectionType
	st.ClientType = info.ClientType
	st.GrantedProducts = info.Products
	st.AccountID = info.AccountID
	st.CompanyID = info.CompanyID
	st.LastIntrospectionTime = &metav1.Time{Time: s.now}
	st.TokenVersion = s.token.version
	if cs.Status == finch.StatusConnected {
		if st.ConnectedAt == nil {
			st.ConnectedAt = &metav1.Time{Time: s.now}
			if st.FirstSessionTime != nil {
				timeToConnect.Observe(s.now.Sub(st.FirstSessionTime.Time).Seconds())
			}
		}
		if !wasConnected {
			r.event(conn, corev1.EventTypeNormal, ReasonConnected, "Introspect", fmt.Sprintf("Finch reports connection %s connected (provider %s)", st.ConnectionID, st.ProviderID))
		}
	}
	return outcome{}, false
}

// nextIntrospection is when the connection is due for a health check: the
// app's interval, shorter while Finch reports it pending.
func (r *FinchConnectionReconciler) nextIntrospection(s *syncState) time.Time {
	st := s.conn.Status
	if st.LastIntrospectionTime == nil {
		return s.now
	}
	interval := s.app.IntrospectionInterval()
	if phaseForStatus(st.ConnectionStatus) == finchv1.PhaseConnecting && interval > pendingIntrospection {
		interval = pendingIntrospection
	}
	return st.LastIntrospectionTime.Add(interval)
}

// phaseForStatus maps Finch's connection status to a phase (step 5).
func phaseForStatus(cs *finchv1.ConnectionStatus) finchv1.Phase {
	if cs == nil {
		return finchv1.PhaseConnecting
	}
	switch cs.Status {
	case "connected":
		return finchv1.PhaseConnected
	case "pending", "processing":
		return finchv1.PhaseConnecting
	case "reauth":
		return finchv1.PhaseReauthRequired
	case "disconnected":
		return finchv1.PhaseDisconnected
	default: // error_permissions, error_no_account_setup, or a status Finch added later
		return finchv1.PhaseError
	}
}

func isKnownStatus(s string) bool {
	switch s {
	case "pending", "processing", "connected", "reauth", "disconnected", "error_permissions", "error_no_account_setup":
		return true
	}
	return false
}

// missingProducts lists the spec's products the connection does not grant
// (deduction and benefits are one product under two names).
func missingProducts(conn *finchv1.FinchConnection, granted []string) []string {
	have := map[string]bool{}
	for _, p := range granted {
		have[p] = true
	}
	if have["benefits"] || have["deduction"] {
		have["benefits"], have["deduction"] = true, true
	}
	var out []string
	for _, p := range products(conn) {
		if !have[p] {
			out = append(out, p)
		}
	}
	return out
}

func sameProducts(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	set := map[string]bool{}
	for _, p := range a {
		set[p] = true
	}
	for _, p := range b {
		if !set[p] {
			return false
		}
	}
	return true
}
