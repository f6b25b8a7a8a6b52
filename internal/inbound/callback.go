package inbound

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/controllers"
	"github.com/connectops/finch-operator/internal/finch"
)

// Event reasons recorded by the callback.
const (
	ReasonTokenStored         = "TokenStored"
	ReasonCallbackFailed      = "CallbackFailed"
	ReasonUnmatchedCode       = "UnmatchedCode"
	ReasonTokenSecretNotOwned = "TokenSecretNotOwned"
	ReasonTokenStoreFailed    = "TokenStoreFailed"
)

// tokenConnectionIDAnnotation is the annotation StoreToken writes on token
// Secrets (controllers/secrets.go fillTokenSecret).
const tokenConnectionIDAnnotation = "finch.connectops.dev/connection-id"

// outcome is what the browser gets for a callback, and the metric result.
type outcome struct {
	result   string
	page     page
	redirect string // 303 to this URL instead of the page
}

// handleBadCallback answers callback URLs of the wrong shape or method like a
// bad parameter.
func (s *Server) handleBadCallback(w http.ResponseWriter, r *http.Request) {
	callbacksTotal.WithLabelValues(callbackInvalid).Inc()
	writePage(w, pageInvalid)
}

// handleCallback is the redirect flow: Finch Connect sent the employer's
// browser here with ?code=...(&state=...). Exchange the code with the app's
// credentials, find the FinchConnection from the customer_id (or
// connection_id) the token response echoes, store the token.
func (s *Server) handleCallback(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet { // the GET pattern also matches HEAD: never spend a code on it
		s.handleBadCallback(w, r)
		return
	}
	ns, name := r.PathValue("namespace"), r.PathValue("app")
	codes := r.URL.Query()["code"]
	if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 ||
		len(codes) != 1 || !validCode(codes[0]) {
		s.handleBadCallback(w, r)
		return
	}
	code := codes[0]
	key := types.NamespacedName{Namespace: ns, Name: name}
	log := s.log.WithValues("callback", key.String())

	ctx, cancel := context.WithTimeout(r.Context(), apiTimeout)
	app := &finchv1.FinchApp{}
	err := s.cfg.Client.Get(ctx, key, app)
	var resolved *controllers.ResolvedApp
	if err == nil {
		resolved, err = s.cfg.Apps.Get(ctx, app)
	}
	cancel()
	if err != nil {
		var cfgErr *controllers.AppConfigError
		switch {
		case apierrors.IsNotFound(err):
			// Same page as a bad parameter: reveal nothing about which apps exist.
			s.handleBadCallback(w, r)
		case errors.As(err, &cfgErr):
			// The app exists but is unusable; the employer sees the same page
			// as for a bad link (nothing revealed), the administrator the reason.
			log.Info("callback for an app that is not usable", "reason", cfgErr.Reason, "error", cfgErr.Message)
			s.limitedWarning(app, ReasonCallbackFailed, "Callback", fmt.Sprintf(
				"an employer reached the callback but FinchApp %q is not usable (%s): %s; the authorization code was not exchanged, the employer must start again once it is fixed",
				app.Name, cfgErr.Reason, cfgErr.Message))
			s.handleBadCallback(w, r)
		default:
			// The code was not spent: a reload later can still succeed.
			log.Error(err, "callback: cannot read the FinchApp")
			callbacksTotal.WithLabelValues(callbackError).Inc()
			writePage(w, pageUnavailable)
		}
		return
	}

	// The redirect_uri must be exactly the one the session was created with.
	// Sessions use the connection's redirectURI, else the app's, else the
	// operator's callback; the connection is unknown until the exchange, and
	// a connection-level redirectURI points elsewhere, so this callback
	// serves the app-level one.
	redirectURI := app.Spec.RedirectURI
	if redirectURI == "" {
		redirectURI = controllers.CallbackURL(app.Spec.PublicURL, key)
	}

	// The exchange runs detached from the browser's request: once the code
	// is sent to Finch, the token must be stored even if the tab is closed.
	base := context.WithoutCancel(r.Context())
	out, ok := s.codes.do(r.Context(), codeKey(key, code), func() (outcome, bool) {
		return s.exchange(base, app, resolved, code, redirectURI)
	})
	if !ok {
		// The browser left while another request for the same code was in flight.
		return
	}
	callbacksTotal.WithLabelValues(out.result).Inc()
	if out.redirect != "" {
		http.Redirect(w, r, out.redirect, http.StatusSeeOther)
		return
	}
	writePage(w, out.page)
}

// exchange spends the code and stores the token. The bool says whether the
// outcome should be remembered for the code (true once the code is spent).
func (s *Server) exchange(base context.Context, app *finchv1.FinchApp, resolved *controllers.ResolvedApp, code, redirectURI string) (outcome, bool) {
	log := s.log.WithValues("callback", client.ObjectKeyFromObject(app).String())
	xctx, cancel := context.WithTimeout(base, exchangeTimeout)
	resp, err := resolved.Client.ExchangeCode(xctx, finch.TokenRequest{Code: code, RedirectURI: redirectURI})
	cancel()
	if err != nil {
		return s.exchangeFailed(app, resolved, err), false
	}
	log = log.WithValues("customerID", resp.CustomerID, "connectionID", resp.ConnectionID)

	ctx, cancel := context.WithTimeout(base, storeTimeout)
	defer cancel()
	conn, err := s.findConnection(ctx, app, resp)
	if err != nil {
		log.Error(err, "token lost: the code was exchanged but the FinchConnection could not be looked up")
		s.warning(app, ReasonCallbackFailed, "Callback", fmt.Sprintf(
			"exchanged an authorization code for customer_id %q (connection %s) but could not look up its FinchConnection: %v; the token was not stored: send the employer a reauthentication session",
			resp.CustomerID, resp.ConnectionID, err))
		return outcome{result: callbackStoreFailed, page: pageContactAdmin}, true
	}
	if conn == nil {
		return s.unmatched(ctx, app, resolved, resp), true
	}
	log = log.WithValues("finchConnection", conn.Name)
	if err := controllers.StoreToken(ctx, s.cfg.Client, s.cfg.APIReader, conn, resp, "redirect"); err != nil {
		log.Error(err, "token lost: the code was exchanged but the token could not be stored", "secret", conn.TokenSecretName())
		if errors.Is(err, controllers.ErrTokenSecretNotOwned) {
			s.warning(conn, ReasonTokenSecretNotOwned, "StoreToken", fmt.Sprintf(
				"the employer finished Finch Connect but Secret %s is neither owned by this FinchConnection nor labelled %s=%s, so the access token was not stored; label (or delete) the Secret, then set annotation %s to send the employer a reauthentication session",
				conn.TokenSecretName(), finchv1.ConnectionLabel, conn.Name, finchv1.ReauthRequestedAtAnnotation))
		} else {
			s.warning(conn, ReasonTokenStoreFailed, "StoreToken", fmt.Sprintf(
				"the employer finished Finch Connect but the access token could not be stored in Secret %s: %v; set annotation %s to send the employer a reauthentication session",
				conn.TokenSecretName(), err, finchv1.ReauthRequestedAtAnnotation))
		}
		return outcome{result: callbackStoreFailed, page: pageContactAdmin}, true
	}
	log.Info("redirect flow: access token stored", "secret", conn.TokenSecretName())
	s.event(conn, corev1.EventTypeNormal, ReasonTokenStored, "ExchangeCode", fmt.Sprintf(
		"the employer finished Finch Connect (redirect flow); access token for connection %s stored in Secret %s",
		resp.ConnectionID, conn.TokenSecretName()))
	if app.Spec.SuccessURL != "" {
		return outcome{result: callbackConnected, redirect: app.Spec.SuccessURL}, true
	}
	return outcome{result: callbackConnected, page: pageConnected}, true
}

// exchangeFailed maps a failed exchange to the employer's page; the detail
// goes to the log and a (rate-limited) Warning Event on the FinchApp.
func (s *Server) exchangeFailed(app *finchv1.FinchApp, resolved *controllers.ResolvedApp, err error) outcome {
	log := s.log.WithValues("callback", client.ObjectKeyFromObject(app).String())
	// finch errors never carry the code or the client secret (the client redacts them).
	switch {
	case finch.IsInvalidGrant(err):
		log.Info("callback: Finch rejected the authorization code", "error", err.Error())
		s.limitedWarning(app, ReasonCallbackFailed, "ExchangeCode",
			"Finch rejected an authorization code at the callback (invalid_grant: unknown, already used or expired); the employer was asked to start again from their link")
		return outcome{result: callbackCodeRejected, page: pageExpired}
	case finch.Classify(err) == finch.ClassTerminal:
		log.Error(err, "callback: Finch rejected the code exchange")
		msg := fmt.Sprintf("Finch rejected the code exchange at the callback: %v; the employer was asked to contact you", err)
		if finch.IsInvalidClient(err) {
			resolved.RejectCredentials()
			msg = fmt.Sprintf("Finch rejected the client credentials of FinchApp %q (invalid_client) while exchanging an authorization code: fix Secret %s; the employer must then start again",
				app.Name, app.Spec.CredentialsSecretRef.Name)
		}
		s.limitedWarning(app, ReasonCallbackFailed, "ExchangeCode", msg)
		return outcome{result: callbackCodeRejected, page: pageContactAdmin}
	default: // 429 beyond the retry budget, 5xx, network, timeout
		log.Error(err, "callback: Finch unavailable for the code exchange")
		s.limitedWarning(app, ReasonCallbackFailed, "ExchangeCode", fmt.Sprintf(
			"could not exchange an authorization code at the callback, Finch is unavailable: %v; the employer was asked to retry in a few minutes", err))
		return outcome{result: callbackFinchUnavailable, page: pageFinchUnavailable}
	}
}

// findConnection finds the FinchConnection a token belongs to: by the
// customer_id the token response echoes, else by its connection_id. Objects
// being deleted are skipped; among several the oldest wins (the controller
// stalls newer duplicates). A miss in the cache is checked against the API
// server, which may know a FinchConnection created moments ago.
func (s *Server) findConnection(ctx context.Context, app *finchv1.FinchApp, resp *finch.TokenResponse) (*finchv1.FinchConnection, error) {
	lookups := []struct{ index, value string }{
		{controllers.IndexConnectionCustomer, resp.CustomerID},
		{controllers.IndexConnectionID, resp.ConnectionID},
	}
	for _, l := range lookups {
		if l.value == "" {
			continue
		}
		list := &finchv1.FinchConnectionList{}
		if err := s.cfg.Client.List(ctx, list, client.InNamespace(app.Namespace),
			client.MatchingFields{l.index: controllers.AppScoped(app.Name, l.value)}); err != nil {
			return nil, fmt.Errorf("list FinchConnections: %w", err)
		}
		if c := oldest(list.Items, func(*finchv1.FinchConnection) bool { return true }); c != nil {
			return c, nil
		}
	}
	list := &finchv1.FinchConnectionList{}
	if err := s.cfg.APIReader.List(ctx, list, client.InNamespace(app.Namespace)); err != nil {
		return nil, fmt.Errorf("list FinchConnections (uncached): %w", err)
	}
	if resp.CustomerID != "" {
		if c := oldest(list.Items, func(c *finchv1.FinchConnection) bool {
			return c.AppName() == app.Name && c.Spec.CustomerID == resp.CustomerID
		}); c != nil {
			return c, nil
		}
	}
	if resp.ConnectionID != "" {
		if c := oldest(list.Items, func(c *finchv1.FinchConnection) bool {
			return c.AppName() == app.Name && c.Status.ConnectionID == resp.ConnectionID
		}); c != nil {
			return c, nil
		}
	}
	return nil, nil
}

// oldest returns the oldest (creationTimestamp, then name) item that is not
// being deleted and passes keep.
func oldest(items []finchv1.FinchConnection, keep func(*finchv1.FinchConnection) bool) *finchv1.FinchConnection {
	var cands []*finchv1.FinchConnection
	for i := range items {
		if c := &items[i]; c.DeletionTimestamp.IsZero() && keep(c) {
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	return cands[0]
}

// unmatched handles a valid code whose customer has no FinchConnection: the
// token is not stored. It is revoked only when nothing claims its connection,
// because a disconnect kills the connection for good.
func (s *Server) unmatched(ctx context.Context, app *finchv1.FinchApp, resolved *controllers.ResolvedApp, resp *finch.TokenResponse) outcome {
	log := s.log.WithValues("callback", client.ObjectKeyFromObject(app).String(),
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
	log.Info("redirect flow: no FinchConnection for the customer; token not stored", "outcome", fate)
	s.warning(app, ReasonUnmatchedCode, "ExchangeCode", fmt.Sprintf(
		"an employer finished Finch Connect for customer_id %q (connection %s), but no FinchConnection in namespace %s with appRef %q has that customerID or connection; the access token was not stored and %s. Create a FinchConnection for this customer and send the employer its Connect link",
		resp.CustomerID, resp.ConnectionID, app.Namespace, app.Name, fate))
	return outcome{result: callbackUnmatched, page: pageReceived}
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
		if sec.Annotations[tokenConnectionIDAnnotation] == connectionID || string(sec.Data["connection_id"]) == connectionID {
			return fmt.Sprintf("token Secret %s/%s", sec.Namespace, sec.Name), nil
		}
	}
	return "", nil
}

// validCode bounds the code parameter: 1..512 printable ASCII characters.
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
	used     *lru[outcome]
	mu       sync.Mutex
	inflight map[string]*flight
}

type flight struct {
	done chan struct{}
	out  outcome
}

func newCodeTracker(size int, ttl time.Duration, now func() time.Time) *codeTracker {
	return &codeTracker{used: newLRU[outcome](size, ttl, now), inflight: map[string]*flight{}}
}

// do returns the remembered outcome for key, waits for an exchange in flight
// (false if ctx ends first), or runs fn, remembering its outcome when fn says so.
func (t *codeTracker) do(ctx context.Context, key string, fn func() (outcome, bool)) (outcome, bool) {
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
			return outcome{}, false
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
	if s.cfg.Recorder == nil || obj == nil {
		return
	}
	if len(note) > 1024 {
		note = note[:1021] + "..."
	}
	s.cfg.Recorder.Eventf(obj, nil, typ, reason, action, "%s", note)
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
