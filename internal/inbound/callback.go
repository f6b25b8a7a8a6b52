package inbound

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/events"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/index"
	"github.com/connectops/finch-operator/internal/tokens"
)

// callbackAnswer is what the browser gets for a callback, and the metric result.
type callbackAnswer struct {
	result     string
	page       page
	redirect   string        // 303 to this URL instead of the page
	retryAfter time.Duration // Retry-After of a 429 page
	reject     string        // rejected before any Finch call: the reason label
	namespace  string        // the connection's namespace once a verified state names it (metric label of a ClusterFinchApp)
}

// handleBadCallback answers callback URLs of the wrong shape or method like a
// bad parameter.
func (s *Server) handleBadCallback(w http.ResponseWriter, r *http.Request) {
	s.refuse(w, r, "", nil, rejectMalformed)
}

// refuse answers a callback that failed verification: unknown or unusable
// app, wrong path, no or bad or expired state, malformed. Every refusal shows
// the same page, so a caller learns nothing about which apps, sessions or
// connections exist. Only these requests draw from the client address's
// bucket (callbacks with a valid state never do: behind a proxy that is not
// in --trusted-proxies every browser shares one address, and a flood must
// not lock employers out) and from the bucket of the app the path names,
// whether it exists or not (bucket; "" when the path names none), so that
// 429 versus 400 does not tell which apps exist. The flood is reported on the
// app when it exists.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, bucket string, app finchv1.AppObject, reason string) {
	if ok, wait := s.ipLimiter.Take(ipKey(clientIP(r, s.cfg.TrustedProxies))); !ok {
		countCallback(app, "", callbackInvalid)
		countRejected(app, "", rejectIPRate)
		writeTooMany(w, wait)
		return
	}
	s.rejectCallback(w, bucket, app, "", reason)
}

// rejectCallback answers a callback refused before any Finch call, drawing
// from the app's bucket for refused traffic (bucket: the app key the path
// names, "" for none); once it is empty the answer is 429 and the flood is
// reported on the app (when app is not nil). connNamespace is the namespace
// of the connection a verified state named ("" for none).
func (s *Server) rejectCallback(w http.ResponseWriter, bucket string, app finchv1.AppObject, connNamespace, reason string) {
	countCallback(app, connNamespace, callbackInvalid)
	countRejected(app, connNamespace, reason)
	if bucket != "" {
		if ok, wait := s.appLimiter.Take(bucket); !ok {
			countRejected(app, connNamespace, rejectAppRate)
			if app != nil {
				s.limitedWarning(app, finchv1.ReasonCallbackFlood, "Callback", fmt.Sprintf(
					"more than %d unverifiable callback requests in a burst for %s (latest refused as %s): answering 429 to them; real employers' callbacks, which carry a state signed by the operator, are still served. Rate-limit the inbound Ingress (see docs/security.md)",
					s.cfg.CallbackAppBurst, describe(app), reason))
			}
			writeTooMany(w, wait)
			return
		}
	}
	writePage(w, pageInvalid)
}

func writeTooMany(w http.ResponseWriter, wait time.Duration) {
	secs := int(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writePage(w, pageTooMany)
}

// handleCallback is the redirect flow: Finch Connect sent the employer's
// browser to /callback/{namespace}/{app}/{path}?code=...&state=... (a
// ClusterFinchApp's: /cluster/callback/{app}/{path}). Before any Finch call
// it checks the parameters, the app, its secret path segment and the state
// the operator signed (an HMAC and its expiry: no I/O) for one of its
// sessions; a request that fails any of these is charged to the client
// address's rate limit, one that passes is not. Then it checks that the
// session is live and not completed, within per-session limits. Only then is
// the code exchanged, with exactly the session's redirect_uri, within the
// app's ceiling for callback exchanges, and the token stored for that
// connection.
func (s *Server) handleCallback(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet { // the GET pattern also matches HEAD: never spend a code on it
		s.handleBadCallback(w, r)
		return
	}
	s.warnUntrustedProxy(r)
	key, validPath := pathApp(r)
	seg := r.PathValue("path")
	q := r.URL.Query()
	codes, states := q["code"], q["state"]
	if !validPath || len(codes) != 1 || !validCode(codes[0]) || len(states) > 1 || len(states) == 1 && len(states[0]) > maxStateLen {
		s.handleBadCallback(w, r)
		return
	}
	code, state := codes[0], ""
	if len(states) == 1 {
		state = states[0]
	}
	bucket := apps.KeyString(key)
	log := s.log.WithValues("callback", bucket)

	ctx, cancel := context.WithTimeout(r.Context(), apiTimeout)
	app, err := s.getApp(ctx, key)
	var resolved *apps.App
	if err == nil {
		resolved, err = s.resolver.get(ctx, app)
	}
	cancel()
	if err != nil {
		var cfgErr *apps.ConfigError
		switch {
		case apierrors.IsNotFound(err):
			s.refuse(w, r, bucket, nil, rejectUnknownApp)
		case errors.As(err, &cfgErr):
			// The app exists but is unusable; the employer sees the same page
			// as for a bad link (nothing revealed), the administrator the reason.
			log.Info("callback for an app that is not usable", "reason", cfgErr.Reason, "error", cfgErr.Message)
			s.limitedWarning(app, finchv1.ReasonCallbackFailed, "Callback", fmt.Sprintf(
				"an employer reached the callback but %s is not usable (%s): %s; the authorization code was not exchanged, the employer must start again once it is fixed",
				describe(app), cfgErr.Reason, cfgErr.Message))
			s.refuse(w, r, bucket, app, rejectUnknownApp)
		default:
			// The code was not spent: a reload later can still succeed.
			log.Error(err, "callback: cannot read the app")
			countCallback(nil, "", callbackError)
			writePage(w, pageUnavailable)
		}
		return
	}
	if !resolved.CallbackPathMatches(seg) {
		s.refuse(w, r, bucket, app, rejectBadPath)
		return
	}
	var redeem func(base context.Context) (callbackAnswer, bool)
	if state == "" && s.cfg.AllowStatelessCallbacks {
		// Nothing verifies a stateless callback: it is charged like a
		// refused one, and refused only when the address is over its limit.
		if ok, wait := s.ipLimiter.Take(ipKey(clientIP(r, s.cfg.TrustedProxies))); !ok {
			countCallback(app, "", callbackInvalid)
			countRejected(app, "", rejectIPRate)
			writeTooMany(w, wait)
			return
		}
		redeem = func(base context.Context) (callbackAnswer, bool) { return s.redeemUnbound(base, app, resolved, code) }
	} else {
		st, ok := resolved.VerifyState(state)
		if !ok {
			s.refuse(w, r, bucket, app, rejectBadState)
			return
		}
		if !st.Legacy() && !s.cfg.Now().Before(st.Expires) {
			// Its session has expired: refused before any lookup.
			s.refuse(w, r, bucket, app, rejectExpiredState)
			return
		}
		redeem = func(base context.Context) (callbackAnswer, bool) { return s.redeem(base, app, resolved, st, code) }
	}

	// The exchange runs detached from the browser's request: once the code
	// is sent to Finch, the token must be stored even if the tab is closed.
	base := context.WithoutCancel(r.Context())
	out, ok := s.codes.do(r.Context(), codeKey(key, code), func() (callbackAnswer, bool) { return redeem(base) })
	if !ok {
		// The browser left while another request for the same code was in flight.
		return
	}
	if out.reject != "" {
		// A valid state whose session is gone or done: not the address's
		// fault, so only the app's bucket for refused traffic is drawn.
		s.rejectCallback(w, bucket, app, out.namespace, out.reject)
		return
	}
	countCallback(app, out.namespace, out.result)
	switch {
	case out.redirect != "":
		http.Redirect(w, r, out.redirect, http.StatusSeeOther)
	case out.page.status == http.StatusTooManyRequests:
		writeTooMany(w, out.retryAfter)
	default:
		writePage(w, out.page)
	}
}

// redeem checks the session a verified state names and spends the code. The
// bool says whether the outcome is remembered for the code: every outcome is,
// except a transient failure that a reload may still turn into a success.
func (s *Server) redeem(base context.Context, app finchv1.AppObject, resolved *apps.App, st apps.State, code string) (callbackAnswer, bool) {
	sessionID := st.SessionID
	ctx, cancel := context.WithTimeout(base, apiTimeout)
	conn, reason, err := s.sessionConnection(ctx, app, sessionID, !st.Legacy())
	cancel()
	if err != nil {
		s.log.Error(err, "callback: cannot look up the session's FinchConnection")
		return callbackAnswer{result: callbackError, page: pageUnavailable}, false
	}
	if reason != "" {
		// Not remembered: refusing costs no Finch call, and a session the
		// cache has not seen yet may be there on a reload.
		return callbackAnswer{reject: reason}, false
	}
	// A few exchanges per session, then one a minute: a leaked Connect link
	// cannot drain the budget, and its employer can still finish after a wait.
	if ok, wait := s.sessionLimiter.Take(appKey(app) + "\x00" + sessionID); !ok {
		countRejected(app, conn.Namespace, rejectSessionLocked)
		return callbackAnswer{result: callbackInvalid, page: pageTooMany, retryAfter: wait, namespace: conn.Namespace}, false
	}
	if out, ok := s.takeExchange(base, app, resolved, conn.Namespace); !ok {
		out.namespace = conn.Namespace
		return out, false
	}
	out, keep := s.exchange(base, app, resolved, code, conn.Status.Session.RedirectURI, conn)
	out.namespace = conn.Namespace
	return out, keep
}

// redeemUnbound spends a code that came back without a state, for
// --callback-require-state=false (should Finch Connect not return state): the
// app must have a session waiting for an employer, the exchange uses the
// app's callback URL as redirect_uri, and the token response's customer_id
// finds the connection.
func (s *Server) redeemUnbound(base context.Context, app finchv1.AppObject, resolved *apps.App, code string) (callbackAnswer, bool) {
	if n := app.AppStatus().Connections; n.AwaitingConnect+n.ReauthRequired == 0 {
		return callbackAnswer{reject: rejectNoSession}, false
	}
	if out, ok := s.takeExchange(base, app, resolved, ""); !ok {
		return out, false
	}
	return s.exchange(base, app, resolved, code, resolved.CallbackURL(), nil)
}

// takeExchange takes a slot of the app's ceiling for callback exchanges, which
// keeps callbacks from spending the app's whole token budget: reconciles
// (embedded hand-offs) always keep the rest of it. A ClusterFinchApp has one
// ceiling per namespace (ns: the connection's; "" for a stateless callback),
// so that one tenant's junk codes under its own valid states cannot use up
// another tenant's exchanges. The app then admits the exchange (its Finch
// budget and per-IP guard) as it admits the reconcilers' calls: an employer
// whose exchange could not start within exchangeMaxBlock is asked to retry
// when it can, rather than kept waiting.
func (s *Server) takeExchange(base context.Context, app finchv1.AppObject, resolved *apps.App, ns string) (callbackAnswer, bool) {
	key := appKey(app)
	ceiling := s.exchangeBudget(key, ns)
	if wait := ceiling.Delay(callbackBudgetKey); wait > 0 {
		countExchange(app, ns, exchangeCeiling)
		s.limitedWarning(app, finchv1.ReasonCallbackFlood, "ExchangeCode", fmt.Sprintf(
			"the callback reached its ceiling of %d code exchanges per %s for %s (--callback-exchanges); an employer was asked to retry in %s",
			s.cfg.CallbackExchanges.Requests, s.cfg.CallbackExchanges.Window, describe(app), wait.Round(time.Second)))
		return callbackAnswer{result: callbackFinchUnavailable, page: pageTooMany, retryAfter: wait}, false
	}
	if wait, _ := resolved.Admit(finch.EndpointToken, ns, "", exchangeMaxBlock); wait > 0 {
		countExchange(app, ns, callbackFinchUnavailable)
		s.limitedWarning(app, finchv1.ReasonCallbackFailed, "ExchangeCode", fmt.Sprintf(
			"could not exchange an authorization code at the callback: the Finch request budget of %s (spec.rateLimit, or the operator's per-IP limit) has no slot for %s; the employer was asked to retry then",
			describe(app), wait.Round(time.Second)))
		return callbackAnswer{result: callbackFinchUnavailable, page: pageTooMany, retryAfter: wait}, false
	}
	if err := ceiling.Wait(base, callbackBudgetKey); err != nil {
		return callbackAnswer{result: callbackError, page: pageUnavailable}, false
	}
	return callbackAnswer{}, true
}

// sessionConnection finds the FinchConnection that publishes sessionID and
// checks the session can still produce a code: not expired, and not completed
// (its token Secret was not already written from it). reason is set when the
// callback must be refused.
func (s *Server) sessionConnection(ctx context.Context, app finchv1.AppObject, sessionID string, mayAskAPI bool) (*finchv1.FinchConnection, string, error) {
	key := finchv1.AppKeyOf(app)
	admitted := apps.AdmittedFilter(ctx, s.cfg.Client, app)
	publishes := func(c *finchv1.FinchConnection) bool {
		return c.AppKey() == key && c.Status.Session != nil && c.Status.Session.ID == sessionID && admitted(c)
	}
	list := &finchv1.FinchConnectionList{}
	if err := s.cfg.Client.List(ctx, list, index.ForAppValue(key, index.ConnectionSession, sessionID)...); err != nil {
		return nil, "", fmt.Errorf("list FinchConnections by session: %w", err)
	}
	conn := index.Oldest(list.Items, publishes)
	missKey := appKey(app) + "\x00" + sessionID
	if conn == nil && mayAskAPI && !s.sessionMisses.Contains(missKey) {
		// The state is the operator's own and unexpired, so the session
		// existed: the cache may just lag the status write that published it
		// (a busy API server). Ask the API server before refusing a real
		// employer; only verified states get here, so this cannot be driven
		// by a flood. A legacy state (no expiry in it, published long before
		// this) never needs it.
		if err := s.cfg.APIReader.List(ctx, list, connectionScope(key)...); err != nil {
			return nil, "", fmt.Errorf("list FinchConnections (uncached): %w", err)
		}
		conn = index.Oldest(list.Items, publishes)
		if conn == nil {
			// A replaced or finished session's state: remember it for a
			// while, so replaying it costs no further uncached list.
			s.sessionMisses.Add(missKey, struct{}{})
		}
	}
	if conn == nil {
		return nil, rejectNoSession, nil
	}
	if !tokens.SessionOpen(conn.Status.Session, s.cfg.Now()) {
		return nil, rejectNoSession, nil
	}
	sec := &corev1.Secret{}
	err := s.cfg.Client.Get(ctx, types.NamespacedName{Namespace: conn.Namespace, Name: conn.TokenSecretName()}, sec)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, "", fmt.Errorf("read token Secret: %w", err)
	case tokens.FromSession(sec, sessionID):
		return nil, rejectSessionCompleted, nil
	}
	return conn, "", nil
}

// exchange spends the code with redirectURI (exactly the session's, RFC 6749
// section 4.1.3) and stores the token for conn, or, when conn is nil or the
// token is another customer's, for the connection the response names. The
// bool says whether the outcome should be remembered for the code.
func (s *Server) exchange(base context.Context, app finchv1.AppObject, resolved *apps.App, code, redirectURI string, conn *finchv1.FinchConnection) (callbackAnswer, bool) {
	appKey := appKey(app)
	log := s.log.WithValues("callback", appKey)
	var sess *finchv1.Session
	if conn != nil {
		sess = conn.Status.Session
	}
	xctx, cancel := context.WithTimeout(base, exchangeTimeout)
	resp, err := resolved.Client.ExchangeCode(xctx, finch.TokenRequest{Code: code, RedirectURI: redirectURI})
	cancel()
	if err != nil {
		out := s.exchangeFailed(app, resolved, err)
		countExchange(app, connNamespace(conn), out.result)
		// A transient failure is not remembered: a reload can still succeed.
		return out, out.result != callbackFinchUnavailable
	}
	countExchange(app, connNamespace(conn), exchangeSpent)
	log = log.WithValues("customerID", resp.CustomerID, "connectionID", resp.ConnectionID)

	ctx, cancel := context.WithTimeout(base, storeTimeout)
	defer cancel()
	if conn == nil || tokens.OtherCustomer(conn, resp) {
		// No session named the connection, or the code belongs to another
		// customer than the session it came back with: store it where the
		// customer says, or nowhere.
		other, err := s.findConnection(ctx, app, resp)
		if err != nil {
			log.Error(err, "token lost: the code was exchanged but the FinchConnection could not be looked up")
			return callbackAnswer{result: callbackStoreFailed, page: pageContactAdmin}, true
		}
		if other == nil {
			return s.unmatched(ctx, app, resolved, resp), true
		}
		if conn == nil {
			// Stateless: the code most likely came from its published session.
			sess = other.Status.Session
		} else {
			sess = nil // not the session the code came back with
		}
		conn = other
	}
	log = log.WithValues("finchConnection", conn.Name)
	sessionID := ""
	if sess != nil {
		sessionID = sess.ID
	}
	if err := tokens.Store(ctx, s.cfg.Client, s.cfg.APIReader, conn, resp, tokens.Source{Flow: "redirect", SessionID: sessionID}); err != nil {
		log.Error(err, "token lost: the code was exchanged but the token could not be stored", "secret", conn.TokenSecretName())
		if errors.Is(err, tokens.ErrNotOwned) {
			s.warning(conn, finchv1.ReasonTokenSecretNotOwned, "StoreToken", fmt.Sprintf(
				"the employer finished Finch Connect but Secret %s is neither owned by this FinchConnection nor labelled %s=%s, so the access token was not stored; label (or delete) the Secret, then set annotation %s to send the employer a reauthentication session",
				conn.TokenSecretName(), finchv1.ConnectionLabel, conn.Name, finchv1.ReauthRequestedAtAnnotation))
		} else {
			s.warning(conn, finchv1.ReasonTokenStoreFailed, "StoreToken", fmt.Sprintf(
				"the employer finished Finch Connect but the access token could not be stored in Secret %s: %v; set annotation %s to send the employer a reauthentication session",
				conn.TokenSecretName(), err, finchv1.ReauthRequestedAtAnnotation))
		}
		return callbackAnswer{result: callbackStoreFailed, page: pageContactAdmin}, true
	}
	log.Info("redirect flow: access token stored", "secret", conn.TokenSecretName())
	s.event(conn, corev1.EventTypeNormal, finchv1.ReasonTokenStored, "ExchangeCode", fmt.Sprintf(
		"the employer finished Finch Connect (redirect flow); access token for connection %s stored in Secret %s",
		resp.ConnectionID, conn.TokenSecretName()))
	if u := app.AppSpec().SuccessURL; u != "" {
		return callbackAnswer{result: callbackConnected, redirect: u}, true
	}
	return callbackAnswer{result: callbackConnected, page: pageConnected}, true
}

// exchangeBudget is the app's ceiling on callback exchanges: one per
// FinchApp, one per namespace for a ClusterFinchApp (see takeExchange).
func (s *Server) exchangeBudget(app, ns string) *budget.Budget {
	key := app
	if strings.HasPrefix(app, finchv1.ClusterFinchAppKind+"/") {
		key += "\x00" + ns
	}
	s.budgetMu.Lock()
	defer s.budgetMu.Unlock()
	b := s.budgets[key]
	if b == nil {
		b = budget.New(s.cfg.CallbackExchanges)
		s.budgets[key] = b
	}
	return b
}

// exchangeFailed maps a failed exchange to the employer's page; the detail
// goes to the log and a (rate-limited) Warning Event on the FinchApp.
func (s *Server) exchangeFailed(app finchv1.AppObject, resolved *apps.App, err error) callbackAnswer {
	log := s.log.WithValues("callback", appKey(app))
	// finch errors never carry the code or the client secret (the client redacts them).
	switch {
	case finch.IsInvalidGrant(err):
		log.Info("callback: Finch rejected the authorization code", "error", err.Error())
		s.limitedWarning(app, finchv1.ReasonCallbackFailed, "ExchangeCode",
			"Finch rejected an authorization code at the callback (invalid_grant: unknown, already used or expired); the employer was asked to start again from their link")
		return callbackAnswer{result: callbackCodeRejected, page: pageExpired}
	case finch.Classify(err) == finch.ClassTerminal:
		log.Error(err, "callback: Finch rejected the code exchange")
		msg := fmt.Sprintf("Finch rejected the code exchange at the callback: %v; the employer was asked to contact you", err)
		if finch.IsInvalidClient(err) {
			resolved.RejectCredentials()
			msg = resolved.CredentialsRejectedMessage() + "; the employer must then start again"
		}
		s.limitedWarning(app, finchv1.ReasonCallbackFailed, "ExchangeCode", msg)
		return callbackAnswer{result: callbackCodeRejected, page: pageContactAdmin}
	default: // 429 beyond the retry budget, 5xx, network, timeout
		log.Error(err, "callback: Finch unavailable for the code exchange")
		s.limitedWarning(app, finchv1.ReasonCallbackFailed, "ExchangeCode", fmt.Sprintf(
			"could not exchange an authorization code at the callback, Finch is unavailable: %v; the employer was asked to retry in a few minutes", err))
		return callbackAnswer{result: callbackFinchUnavailable, page: pageFinchUnavailable}
	}
}

// findConnection finds the FinchConnection a token belongs to: by the
// customer_id the token response echoes, else by its connection_id. Objects
// being deleted are skipped; among several the oldest wins (the controller
// stalls newer duplicates). A miss in the cache is checked against the API
// server, which may know a FinchConnection created moments ago.
func (s *Server) findConnection(ctx context.Context, app finchv1.AppObject, resp *finch.TokenResponse) (*finchv1.FinchConnection, error) {
	key := finchv1.AppKeyOf(app)
	// A ClusterFinchApp's token goes only to a namespace it admits.
	admitted := apps.AdmittedFilter(ctx, s.cfg.Client, app)
	lookups := []struct{ index, value string }{
		{index.ConnectionCustomer, resp.CustomerID},
		{index.ConnectionID, resp.ConnectionID},
	}
	for _, l := range lookups {
		if l.value == "" {
			continue
		}
		list := &finchv1.FinchConnectionList{}
		if err := s.cfg.Client.List(ctx, list, index.ForAppValue(key, l.index, l.value)...); err != nil {
			return nil, fmt.Errorf("list FinchConnections: %w", err)
		}
		if c := index.Oldest(list.Items, admitted); c != nil {
			return c, nil
		}
	}
	list := &finchv1.FinchConnectionList{}
	if err := s.cfg.APIReader.List(ctx, list, connectionScope(key)...); err != nil {
		return nil, fmt.Errorf("list FinchConnections (uncached): %w", err)
	}
	if resp.CustomerID != "" {
		if c := index.Oldest(list.Items, func(c *finchv1.FinchConnection) bool {
			return c.AppKey() == key && c.Spec.CustomerID == resp.CustomerID && admitted(c)
		}); c != nil {
			return c, nil
		}
	}
	if resp.ConnectionID != "" {
		if c := index.Oldest(list.Items, func(c *finchv1.FinchConnection) bool {
			return c.AppKey() == key && c.Status.ConnectionID == resp.ConnectionID && admitted(c)
		}); c != nil {
			return c, nil
		}
	}
	return nil, nil
}

// unmatched handles a valid code whose customer has no FinchConnection: the
// token is not stored. It is revoked only when nothing claims its connection,
// because a disconnect kills the connection for good.
func (s *Server) unmatched(ctx context.Context, app finchv1.AppObject, resolved *apps.App, resp *finch.TokenResponse) callbackAnswer {
	log := s.log.WithValues("callback", appKey(app),
		"customerID", resp.CustomerID, "connectionID", resp.ConnectionID)
	var fate string
	claim, err := s.connectionClaim(ctx, resp.ConnectionID)
	switch {
	case resp.ConnectionID == "":
		fate = "it was not revoked (Finch returned no connection_id to check)"
	case err != nil:
		log.Error(err, "unmatched code: cannot tell whether the connection is claimed; not revoking it")
		fate = fmt.Sprintf("it was not revoked (could not check whether anything claims the connection: %v)", err)
	case claim != "":
		fate = fmt.Sprintf("it was not revoked because %s claims connection %s", claim, resp.ConnectionID)
	default:
		if err := resolved.Client.Disconnect(ctx, resp.AccessToken); err != nil && !finch.IsInvalidToken(err) {
			log.Error(err, "unmatched code: revoking the token failed")
			fate = fmt.Sprintf("revoking it failed (%v): disconnect connection %s in the Finch dashboard if nobody needs it", err, resp.ConnectionID)
		} else {
			fate = fmt.Sprintf("nothing claims connection %s, so it was disconnected at Finch", resp.ConnectionID)
		}
	}
	log.Info("redirect flow: no FinchConnection for the customer; token not stored", "callbackAnswer", fate)
	where := fmt.Sprintf("in namespace %s with appRef %q", app.GetNamespace(), app.GetName())
	if app.GetNamespace() == "" {
		where = fmt.Sprintf("in any namespace with appRef ClusterFinchApp %q", app.GetName())
	}
	s.warning(app, finchv1.ReasonUnmatchedCode, "ExchangeCode", fmt.Sprintf(
		"an employer finished Finch Connect for customer_id %q (connection %s), but no FinchConnection %s has that customerID or connection; the access token was not stored and %s. Create a FinchConnection for this customer and send the employer its Connect link",
		resp.CustomerID, resp.ConnectionID, where, fate))
	return callbackAnswer{result: callbackUnmatched, page: pageReceived}
}

// connectionClaim says what, if anything, claims a Finch connection: a
// FinchConnection anywhere that recorded it (whatever its app or namespace),
// or a token Secret written for it (e.g. retained after its FinchConnection
// was deleted). It returns "" when nothing does.
func (s *Server) connectionClaim(ctx context.Context, connectionID string) (string, error) {
	if connectionID == "" {
		return "", nil
	}
	// Cached, cluster-wide: any app, any namespace, including objects being deleted.
	conns := &finchv1.FinchConnectionList{}
	if err := s.cfg.Client.List(ctx, conns); err != nil {
		return "", fmt.Errorf("list FinchConnections: %w", err)
	}
	for _, c := range conns.Items {
		if c.Status.ConnectionID == connectionID {
			return fmt.Sprintf("FinchConnection %s/%s", c.Namespace, c.Name), nil
		}
	}
	// Token Secrets carry the operator's label, so they are in the cache.
	secrets := &corev1.SecretList{}
	if err := s.cfg.Client.List(ctx, secrets, client.HasLabels{finchv1.ConnectionLabel}); err != nil {
		return "", fmt.Errorf("list token Secrets: %w", err)
	}
	for _, sec := range secrets.Items {
		if sec.Type != finchv1.TokenSecretType && sec.Type != finchv1.CodeSecretType && !tokens.HoldsConnection(&sec, connectionID) {
			// The cache keeps only the metadata of such Secrets (e.g. an
			// Opaque token Secret labelled by hand): read its data.
			if err := s.cfg.APIReader.Get(ctx, client.ObjectKeyFromObject(&sec), &sec); client.IgnoreNotFound(err) != nil {
				return "", fmt.Errorf("read Secret %s/%s: %w", sec.Namespace, sec.Name, err)
			}
		}
		if tokens.HoldsConnection(&sec, connectionID) {
			return fmt.Sprintf("token Secret %s/%s", sec.Namespace, sec.Name), nil
		}
	}
	return "", nil
}

// validCode accepts what RFC 6749 allows an authorization code to be
// (Appendix A.11: one or more VSCHAR, %x20-7E) minus the space, bounded to
// 512 bytes. Finch's docs show codes as UUIDs ("code=90abecb6-…",
// finch-docs Redirect flow example), which pass; nothing in Finch's SDKs pins
// a stricter format, so none is assumed: the signed state is the real check.
func validCode(code string) bool {
	if code == "" || len(code) > maxCodeLen {
		return false
	}
	for i := 0; i < len(code); i++ {
		if code[i] < 0x21 || code[i] > 0x7e {
			return false
		}
	}
	return true
}

// codeKey identifies a code for an app without keeping the code itself.
func codeKey(app types.NamespacedName, code string) string {
	sum := sha256.Sum256([]byte(app.String() + "\x00" + code))
	return hex.EncodeToString(sum[:])
}

// codeTracker remembers the outcome of spent codes (so a reload or a
// double-click shows the same page instead of "already used") and coalesces
// concurrent requests for the same code into one exchange.
type codeTracker struct {
	used     *lru[callbackAnswer]
	mu       sync.Mutex
	inflight map[string]*flight
}

type flight struct {
	done chan struct{}
	out  callbackAnswer
}

func newCodeTracker(size int, ttl time.Duration, now func() time.Time) *codeTracker {
	return &codeTracker{used: newLRU[callbackAnswer](size, ttl, now), inflight: map[string]*flight{}}
}

// do returns the remembered outcome for key, waits for an exchange in flight
// (false if ctx ends first), or runs fn, remembering its outcome when fn says so.
func (t *codeTracker) do(ctx context.Context, key string, fn func() (callbackAnswer, bool)) (callbackAnswer, bool) {
	if out, ok := t.used.Get(key); ok {
		return out, true
	}
	t.mu.Lock()
	if f, ok := t.inflight[key]; ok {
		t.mu.Unlock()
		select {
		case <-f.done:
			return f.out, true
		case <-ctx.Done():
			return callbackAnswer{}, false
		}
	}
	if out, ok := t.used.Get(key); ok { // finished between the two checks
		t.mu.Unlock()
		return out, true
	}
	f := &flight{done: make(chan struct{})}
	t.inflight[key] = f
	t.mu.Unlock()

	out, remember := fn()
	f.out = out
	t.mu.Lock()
	if remember {
		t.used.Add(key, out)
	}
	delete(t.inflight, key)
	t.mu.Unlock()
	close(f.done)
	return out, true
}

// event records an Event (nil-safe); the note is never a format string.
func (s *Server) event(obj client.Object, typ, reason, action, note string) {
	if obj != nil {
		events.Record(s.cfg.Recorder, obj, typ, reason, action, note)
	}
}

func (s *Server) warning(obj client.Object, reason, action, note string) {
	s.event(obj, corev1.EventTypeWarning, reason, action, note)
}

// limitedWarning is warning for failures anyone can cause with a made-up
// request: a few per object and reason, then one per 30 s.
func (s *Server) limitedWarning(obj client.Object, reason, action, note string) {
	key := obj.GetNamespace() + "/" + obj.GetName() + "/" + reason
	if s.limiter.Allow(key) {
		s.warning(obj, reason, action, note)
	}
}

// appKey is an app's key as metrics, limits and logs use it (apps.KeyString).
func appKey(app finchv1.AppObject) string { return apps.KeyString(finchv1.AppKeyOf(app)) }

// connNamespace is conn's namespace, "" for nil.
func connNamespace(conn *finchv1.FinchConnection) string {
	if conn == nil {
		return ""
	}
	return conn.Namespace
}

// describe names an app for messages: FinchApp "x" or ClusterFinchApp "x".
func describe(app finchv1.AppObject) string { return finchv1.DescribeApp(finchv1.AppKeyOf(app)) }
