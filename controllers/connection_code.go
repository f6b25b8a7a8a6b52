// Step 4: the code an embedded flow hands over, and the token Secret it becomes.

package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/events"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/tokens"
)

// exchangeCode handles the embedded flow: the customer's backend handed over
// an authorization code in a labelled Secret (step 4). Like the redirect
// callback (tokens.CodeSession, tokens.CheckToken), it spends a code only
// while the connection publishes an open session, and stores the token only
// if Finch says it is this connection's: a code Secret, which anyone allowed
// to create Secrets in the namespace can write, never replaces a connected
// employer's token with another's. Reads s.app and code Secrets; writes the
// token Secret and status.codeExchangeError and the token's facts.
func (r *FinchConnectionReconciler) exchangeCode(ctx context.Context, s *syncState) outcome {
	conn, st := s.conn, &s.conn.Status
	codes, err := r.secrets().CodeSecrets(ctx, conn)
	if err != nil {
		return retry(err)
	}
	if len(codes) == 0 {
		return nil
	}
	log := logf.FromContext(ctx)
	// Use the newest code; older ones are stale by definition.
	codeSecret := codes[len(codes)-1]
	code := string(codeSecret.Data[finchv1.CodeKey])

	tok, err := r.secrets().Token(ctx, conn)
	if err != nil {
		return retry(err)
	}
	if tok.Token != "" && tok.CodeUID == string(codeSecret.UID) {
		// Already exchanged; only the clean-up was interrupted.
		r.deleteCodeSecrets(ctx, codes)
		return done{}
	}
	if code == "" {
		return r.refuseCode(ctx, conn, codes, fmt.Sprintf("Secret %s has no %q key", codeSecret.Name, finchv1.CodeKey))
	}
	// The code can only come from the session the connection publishes, so
	// without an open one it is refused unspent: no Finch call.
	sess, err := tokens.CodeSession(conn, tok.SessionID, s.now)
	if pc := pendingReauth(st); err != nil && pc != nil && s.now.Before(intentExpiry(conn, pc)) {
		// A reauthentication session may have been issued without its link
		// being recorded (status.pendingCall): the code can come from it.
		sess, err = &finchv1.Session{Kind: finchv1.SessionReauthenticate, RedirectURI: pc.RedirectURI, ExpiresAt: metav1.Time{Time: intentExpiry(conn, pc)}}, nil
	}
	if err != nil {
		return r.refuseCode(ctx, conn, codes, fmt.Sprintf(
			"code Secret %s was refused without being exchanged: %v, so the code cannot be this connection's; the connection keeps its token and state. Hand over a code only while status.session is published (set annotation %s for a reauthentication session)",
			codeSecret.Name, err, finchv1.ReauthRequestedAtAnnotation))
	}
	if !tok.Writable() {
		// Check before spending the single-use code: a token that cannot be
		// stored would be lost.
		return stalled(finchv1.ReasonTokenSecretNotOwned,
			"Secret %s exists but is neither owned by this FinchConnection nor labelled %s=%s; label it (or delete it) so the operator may store the new token, then hand over a fresh code",
			conn.TokenSecretName(), finchv1.ConnectionLabel, conn.Name)
	}
	if err := r.ensureFinalizer(ctx, conn); err != nil {
		return retry(err)
	}
	// Send exactly the redirect_uri of the session the code came from, none
	// when it had none (RFC 6749 section 4.1.3; Finch sends redirect_uri only in
	// the redirect flow). The code is single-use: from here the pass stores
	// the token even if the manager stops meanwhile.
	s.commitPass()
	resp, err := s.app.Client.ExchangeCode(ctx, finch.TokenRequest{Code: code, RedirectURI: sess.RedirectURI})
	if err != nil {
		if finch.Classify(err) == finch.ClassTerminal {
			// A bad, used or expired code never becomes good: drop it and say so.
			if finch.IsInvalidGrant(err) && tok.Token != "" {
				// Most likely our own earlier exchange of this code, whose
				// clean-up was interrupted: the token is already stored.
				r.deleteCodeSecrets(ctx, codes)
				return done{}
			}
			if finch.IsInvalidClient(err) {
				s.app.RejectCredentials()
			}
			return r.refuseCode(ctx, conn, codes, fmt.Sprintf("Finch rejected the authorization code from Secret %s: %s", codeSecret.Name, finchMessage(err)),
				"have the employer finish Finch Connect again and hand over the new code")
		}
		return r.finchError(s, "exchange authorization code", err)
	}
	if err := tokens.CheckToken(conn, sess, resp); err != nil {
		// Spent, but not this employer's: never stored, and not revoked
		// either (it is another connection's, which may be in use).
		log.Info("embedded flow: the code's token is not this connection's; not stored", "codeSecret", codeSecret.Name,
			"customerID", resp.CustomerID, "connectionID", resp.ConnectionID)
		return r.refuseCode(ctx, conn, codes, fmt.Sprintf(
			"Finch exchanged the code from Secret %s, but %v (%q), so it was not stored: the connection keeps its token and connection ID. Have the employer finish Finch Connect from status.session.connectURL and hand over that code",
			codeSecret.Name, err, conn.Spec.CustomerID))
	}
	if err := tokens.Store(ctx, r.Client, r.APIReader, conn, resp, tokens.Source{Flow: "embedded", CodeSecretUID: string(codeSecret.UID), SessionID: sess.ID}); err != nil {
		log.Error(err, "token lost: the code was exchanged but the token could not be stored", "secret", conn.TokenSecretName())
		events.Record(r.Recorder, conn, corev1.EventTypeWarning, finchv1.ReasonTokenStoreFailed, "StoreToken",
			fmt.Sprintf("the access token could not be stored in Secret %s: %v; the employer must re-authenticate", conn.TokenSecretName(), err))
		r.deleteCodeSecrets(ctx, codes)
		return retry(err)
	}
	r.deleteCodeSecrets(ctx, codes)
	st.CodeExchangeError = ""
	recordTokenResponse(st, resp)
	st.TokenSecretRef = &finchv1.LocalObjectReference{Name: conn.TokenSecretName()}
	events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonTokenStored, "ExchangeCode",
		fmt.Sprintf("exchanged the authorization code; access token stored in Secret %s", conn.TokenSecretName()))
	// The token Secret's watch event brings the next pass (introspection).
	return done{}
}

// refuseCode drops the handed-over code Secrets and says why in status
// (condition CodeRejected, see readiness) and a Warning Event, with advice
// appended to the Event when given. The connection's token is untouched.
func (r *FinchConnectionReconciler) refuseCode(ctx context.Context, conn *finchv1.FinchConnection, codes []corev1.Secret, why string, advice ...string) outcome {
	r.deleteCodeSecrets(ctx, codes)
	conn.Status.CodeExchangeError = why
	note := why
	for _, a := range advice {
		note += "; " + a
	}
	events.Record(r.Recorder, conn, corev1.EventTypeWarning, finchv1.ReasonCodeRejected, "ExchangeCode", note)
	return done{}
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

// readToken reads the token Secret. Writes s.token.
func (r *FinchConnectionReconciler) readToken(ctx context.Context, s *syncState) outcome {
	tok, err := r.secrets().Token(ctx, s.conn)
	if err != nil {
		return retry(err)
	}
	s.token = tok
	return nil
}

// guardToken records the stored token and sets the finalizer it needs.
// Reads s.token; writes status.tokenSecretRef and codeExchangeError.
func (r *FinchConnectionReconciler) guardToken(ctx context.Context, s *syncState) outcome {
	if s.token.Token == "" {
		return nil
	}
	conn, st := s.conn, &s.conn.Status
	st.TokenSecretRef = &finchv1.LocalObjectReference{Name: conn.TokenSecretName()}
	if s.token.Version != st.TokenVersion {
		// A token arrived since (the callback, an adoption): a refused code
		// no longer matters. A refusal that left the token as it was stays
		// shown until then, or until a resync (takeRequests).
		st.CodeExchangeError = ""
	}
	// The finalizer lets deletion release an owned token Secret (Retain) or
	// disconnect (Disconnect); a foreign, unlabelled Secret needs it only for the latter.
	if s.token.Owned || s.token.Labelled || conn.Spec.DeletionPolicy == finchv1.DeletionPolicyDisconnect {
		if err := r.ensureFinalizer(ctx, conn); err != nil {
			return retry(err)
		}
	}
	return nil
}

// ensureFinalizer adds the finalizer once the connection holds a token.
func (r *FinchConnectionReconciler) ensureFinalizer(ctx context.Context, conn *finchv1.FinchConnection) error {
	if controllerutil.ContainsFinalizer(conn, Finalizer) {
		return nil
	}
	// Patch a copy: Patch refreshes its object from the server's answer,
	// which would throw away the status this pass has built so far (the
	// redirect flow's first pass lost status.tokenSecretRef that way).
	obj := conn.DeepCopy()
	patch := client.MergeFrom(conn.DeepCopy())
	controllerutil.AddFinalizer(obj, Finalizer)
	if err := r.Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("add finalizer: %w", err)
	}
	conn.Finalizers = obj.Finalizers
	conn.ResourceVersion = obj.ResourceVersion
	return nil
}
