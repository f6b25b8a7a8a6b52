package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

const (
	// Finalizer is set on FinchConnections that hold a token, so deletion can
	// disconnect (Disconnect) or release the token Secret (Retain).
	Finalizer = "finch.connectops.dev/finalizer"

	// maxDeleteFailures bounds how often a failing disconnect is retried before
	// the connection reports Stalled (it keeps retrying, slowly).
	maxDeleteFailures = 5
	// defaultRetryBase and retryMax bound the persisted backoff for transient failures.
	defaultRetryBase = 5 * time.Second
	retryMax         = 10 * time.Minute
	// pendingIntrospection is how often a connection Finch reports pending or
	// processing is introspected (capped by the app's interval).
	pendingIntrospection = 15 * time.Minute
)

// Condition and Event reasons. Event reasons equal condition reasons.
const (
	ReasonAwaitingEmployer    = "AwaitingEmployer"
	ReasonConnected           = "Connected"
	ReasonConnectionPending   = "ConnectionPending"
	ReasonReauthRequired      = "ReauthRequired"
	ReasonNotConnected        = "NotConnected"
	ReasonProgressing         = "Progressing"
	ReasonSucceeded           = "Succeeded"
	ReasonSuspended           = "Suspended"
	ReasonAppNotFound         = "AppNotFound"
	ReasonAppNotReady         = "AppNotReady"
	ReasonInvalidCredentials  = "InvalidCredentials"
	ReasonFinchRejected       = "FinchRejected"
	ReasonFinchUnavailable    = "FinchUnavailable"
	ReasonRateLimited         = "RateLimited"
	ReasonDuplicateCustomerID = "DuplicateCustomerID"
	ReasonConnectionExists    = "ConnectionExists"
	ReasonTokenRevoked        = "TokenRevoked"
	ReasonTokenSecretNotOwned = "TokenSecretNotOwned"
	ReasonTokenStoreFailed    = "TokenStoreFailed"
	ReasonEmployerAction      = "EmployerActionRequired"
	ReasonDisconnected        = "Disconnected"
	ReasonDisconnectFailed    = "DisconnectFailed"
	ReasonCodeRejected        = "CodeRejected"
	ReasonTokenStored         = "TokenStored"
	ReasonSessionCreated      = "SessionCreated"
	ReasonSessionRefreshed    = "SessionRefreshed"
	ReasonSessionExpired      = "SessionExpired"
	ReasonReauthSession       = "ReauthSessionCreated"
	ReasonReauthCompleted     = "ReauthCompleted"
	ReasonUnknownStatus       = "UnknownConnectionStatus"
	ReasonBudgetWait          = "WaitingForBudget"
)

// FinchConnectionReconciler drives a FinchConnection through the lifecycle in
// DESIGN.md. Every decision is taken from status, Secrets and the clock; each
// Finch call's result lands in status (one patch per reconcile) before any
// call that depends on it.
type FinchConnectionReconciler struct {
	client.Client
	// APIReader reads uncached (migrated token Secrets, FinchApp Secrets).
	APIReader client.Reader
	// SecretMetadata sees the metadata of every Secret (not just labelled ones).
	SecretMetadata client.Reader
	Apps           *AppRegistry
	Recorder       recorder.EventRecorder
	// Now is the clock (tests may replace it).
	Now func() time.Time
	// RetryBase is the first delay of the persisted backoff (default 5s).
	RetryBase time.Duration

	phases phaseTracker
	// written remembers the resourceVersion of each connection's last write,
	// so a pass that reads an older copy from the cache waits instead of
	// repeating a Finch call whose result it cannot see yet.
	written sync.Map
}

// syncState carries one reconcile's inputs and findings.
type syncState struct {
	conn            *finchv1.FinchConnection
	now             time.Time
	app             *ResolvedApp
	token           tokenState
	forceIntrospect bool   // requestedAt annotation or a webhook without status
	forceReauth     bool   // reauthRequestedAt annotation
	webhookStatus   string // connection status a verified webhook reported
	hadHint         bool
}

// outcome is what a step decided; finish turns it into conditions and a result.
type outcome struct {
	requeue    time.Duration // when to look again (0: only on events)
	stall      *reason       // needs a human
	wait       *reason       // waiting for something that a watch will report
	retryErr   error         // transient failure: persisted backoff
	retryAfter time.Duration // a 429's Retry-After
	suspended  bool
	deferred   bool // nothing done yet (backoff or budget): come back at requeue
}

type reason struct{ reason, message string }

func stalled(r, format string, args ...any) outcome {
	return outcome{stall: &reason{r, fmt.Sprintf(format, args...)}}
}

// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchconnections,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchconnections/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchconnections/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile runs one pass of the lifecycle.
func (r *FinchConnectionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	conn := &finchv1.FinchConnection{}
	if err := r.Get(ctx, req.NamespacedName, conn); err != nil {
		if apierrors.IsNotFound(err) {
			r.phases.forget(req.NamespacedName)
			r.written.Delete(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if last, ok := r.written.Load(req.NamespacedName); ok && olderVersion(conn.ResourceVersion, last.(string)) {
		return ctrl.Result{RequeueAfter: staleCacheDelay}, nil
	}
	if !conn.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, conn)
	}
	orig := conn.DeepCopy()
	s := &syncState{conn: conn, now: r.Now()}
	return r.finish(ctx, orig, s, r.sync(ctx, s))
}

// sync decides the next step from what is known.
func (r *FinchConnectionReconciler) sync(ctx context.Context, s *syncState) outcome {
	conn := s.conn
	if conn.Spec.Suspend {
		return outcome{suspended: true}
	}
	if o, ok := r.resolveApp(ctx, s); !ok {
		return o
	}
	if o, dup := r.checkDuplicate(ctx, s); dup {
		return o
	}
	r.consumeRequests(s)
	if wait := r.backoffRemaining(s); wait > 0 {
		return outcome{requeue: wait, deferred: true}
	}

	codes, err := r.secrets().codeSecrets(ctx, conn)
	if err != nil {
		return outcome{retryErr: err}
	}
	if len(codes) > 0 {
		return r.exchangeCode(ctx, s, codes)
	}
	tok, err := r.secrets().readToken(ctx, conn)
	if err != nil {
		return outcome{retryErr: err}
	}
	s.token = tok
	if tok.token != "" {
		return r.syncWithToken(ctx, s)
	}
	return r.syncWithoutToken(ctx, s)
}

// staleCacheDelay is how long a pass waits for the cache to catch up with
// the operator's own last write.
const staleCacheDelay = 100 * time.Millisecond

// olderVersion reports whether resourceVersion a predates b. Versions are
// opaque to clients, but the API server derives them from etcd revisions,
// which increase; anything that does not parse is treated as not older.
func olderVersion(a, b string) bool {
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	return err1 == nil && err2 == nil && x < y
}

// maxBudgetBlock is the longest a reconcile blocks a worker waiting for the
// app's Finch budget; beyond it the pass comes back when budget frees up, so
// a backlog of one kind of call never starves the others.
const maxBudgetBlock = 5 * time.Second

// deferForBudget defers a pass whose Finch call would wait long for budget.
func deferForBudget(s *syncState, endpoint string) (outcome, bool) {
	d := s.app.Budget.Delay(endpoint)
	if d <= maxBudgetBlock {
		return outcome{}, false
	}
	o := outcome{requeue: d + time.Duration(rand.Int64N(int64(d/10)+1)), deferred: true}
	o.wait = &reason{ReasonBudgetWait, fmt.Sprintf("waiting for FinchApp %q's request budget for %s (spec.rateLimit); next attempt in about %s",
		s.conn.AppName(), endpoint, o.requeue.Round(time.Second))}
	return o, true
}

func (r *FinchConnectionReconciler) secrets() SecretReader {
	return SecretReader{Cached: r.Client, Metadata: r.SecretMetadata, API: r.APIReader}
}

// resolveApp finds the FinchApp and its Finch client.
func (r *FinchConnectionReconciler) resolveApp(ctx context.Context, s *syncState) (outcome, bool) {
	conn := s.conn
	app := &finchv1.FinchApp{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: conn.Namespace, Name: conn.AppName()}, app); err != nil {
		if apierrors.IsNotFound(err) {
			return outcome{wait: &reason{ReasonAppNotFound, fmt.Sprintf(
				"FinchApp %q not found in namespace %s: create it or fix spec.appRef (the connection proceeds as soon as it exists)",
				conn.AppName(), conn.Namespace)}}, false
		}
		return outcome{retryErr: fmt.Errorf("get FinchApp: %w", err)}, false
	}
	resolved, err := r.Apps.Get(ctx, app)
	if err != nil {
		var cfgErr *AppConfigError
		if errors.As(err, &cfgErr) {
			return outcome{wait: &reason{ReasonAppNotReady, fmt.Sprintf("FinchApp %q is not usable: %s", app.Name, cfgErr.Message)}}, false
		}
		return outcome{retryErr: err}, false
	}
	if resolved.CredentialsRejected() {
		return stalled(ReasonInvalidCredentials,
			"Finch rejected the client credentials of FinchApp %q (invalid_client): fix Secret %s (the sandbox, development and production apps have different credentials)",
			app.Name, app.Spec.CredentialsSecretRef.Name), false
	}
	s.app = resolved
	return outcome{}, true
}

// checkDuplicate stalls the newer of two FinchConnections of one app with the
// same customerID: two Connect links converted by one employer would create
// two connections (the migration guide's "Don't").
func (r *FinchConnectionReconciler) checkDuplicate(ctx context.Context, s *syncState) (outcome, bool) {
	conn := s.conn
	list := &finchv1.FinchConnectionList{}
	if err := r.List(ctx, list, client.InNamespace(conn.Namespace),
		client.MatchingFields{IndexConnectionCustomer: AppScoped(conn.AppName(), conn.Spec.CustomerID)}); err != nil {
		return outcome{retryErr: fmt.Errorf("list connections by customer: %w", err)}, true
	}
	for i := range list.Items {
		other := &list.Items[i]
		if other.UID == conn.UID || !other.DeletionTimestamp.IsZero() {
			continue
		}
		if olderThan(other, conn) {
			return stalled(ReasonDuplicateCustomerID,
				"FinchConnection %q already uses customerID %q with FinchApp %q; this one makes no Finch calls. Delete one of them (a customer may use suffixes such as acme-1, acme-2 for separate connections)",
				other.Name, conn.Spec.CustomerID, conn.AppName()), true
		}
	}
	return outcome{}, false
}

func olderThan(a, b *finchv1.FinchConnection) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// consumeRequests reads the manual request annotations and what the last
// verified webhook said (the receiver records it as annotations).
func (r *FinchConnectionReconciler) consumeRequests(s *syncState) {
	conn := s.conn
	if v := conn.Annotations[finchv1.RequestedAtAnnotation]; v != "" && v != conn.Status.LastHandledReconcileAt {
		s.forceIntrospect = true
		conn.Status.LastHandledReconcileAt = v
	}
	if v := conn.Annotations[finchv1.ReauthRequestedAtAnnotation]; v != "" && v != conn.Status.LastHandledReauthAt {
		s.forceReauth = true
		conn.Status.LastHandledReauthAt = v
	}
	if v := conn.Annotations[finchv1.WebhookEventAnnotation]; v != "" && v != conn.Status.LastHandledWebhookEvent {
		s.hadHint = true
		s.webhookStatus = conn.Annotations[finchv1.WebhookStatusAnnotation]
		if s.webhookStatus != "reauth" {
			s.forceIntrospect = true
		}
		conn.Status.LastHandledWebhookEvent = v
	}
}

// backoffRemaining is how long a persisted backoff still runs. A spec change
// or an explicit request skips it.
func (r *FinchConnectionReconciler) backoffRemaining(s *syncState) time.Duration {
	rs := s.conn.Status.Retry
	if rs == nil || s.forceIntrospect || s.forceReauth || s.hadHint || rs.ObservedGeneration != s.conn.Generation {
		return 0
	}
	return rs.NextAttemptTime.Sub(s.now)
}

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
	resp, err := s.app.Client.ExchangeCode(ctx, finch.TokenRequest{Code: code})
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
	if err := storeToken(ctx, r.Client, r.APIReader, conn, resp, "embedded", string(codeSecret.UID)); err != nil {
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
	wasConnected := st.ConnectionStatus != nil && st.ConnectionStatus.Status == "connected"
	st.ConnectionID = info.ConnectionID
	cs := &finchv1.ConnectionStatus{Status: info.ConnectionStatus.Status, Message: info.ConnectionStatus.Message}
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
	if cs.Status == "connected" {
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
		ID: resp.SessionID, ConnectURL: resp.ConnectURL, Kind: finchv1.SessionReauthenticate,
		IssuedAt:  metav1.Time{Time: s.now},
		ExpiresAt: metav1.Time{Time: s.now.Add(time.Duration(minutes) * time.Minute)},
		// The token the reauth replaces: a different token means it was completed.
		RequestHash: s.token.version,
	}
	st.Phase = finchv1.PhaseReauthRequired
	sessionsIssued.WithLabelValues(string(finchv1.SessionReauthenticate)).Inc()
	r.event(conn, corev1.EventTypeNormal, ReasonReauthSession, "Reauthenticate",
		fmt.Sprintf("Finch needs the employer to re-authenticate connection %s: send them status.session.connectURL (expires %s)",
			st.ConnectionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339)))
	return outcome{requeue: st.Session.ExpiresAt.Sub(s.now) + time.Second}
}

// syncWithoutToken: no token here, so issue or refresh the Connect session
// (steps 1-3).
func (r *FinchConnectionReconciler) syncWithoutToken(ctx context.Context, s *syncState) outcome {
	conn, st := s.conn, &s.conn.Status
	st.TokenSecretRef = nil
	st.TokenVersion = ""
	if st.ConnectionID != "" && s.forceReauth {
		// The connection exists at Finch but its token is not here: a
		// reauthentication session yields a new code, hence a new token.
		return r.ensureReauthSession(ctx, s)
	}
	if c := meta.FindStatusCondition(st.Conditions, finchv1.ConditionStalled); c != nil && c.Status == metav1.ConditionTrue &&
		c.ObservedGeneration == conn.Generation && !s.forceIntrospect &&
		(c.Reason == ReasonConnectionExists || c.Reason == ReasonFinchRejected) {
		// Finch already answered this spec; asking again would loop.
		return outcome{stall: &reason{c.Reason, c.Message}}
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
	if sess != nil && sess.Kind == finchv1.SessionConnect && sess.RequestHash == hash && !s.forceIntrospect {
		if refresh := refreshTime(sess); s.now.Before(refresh) {
			st.Phase = finchv1.PhaseAwaitingConnect
			return outcome{requeue: jitterDown(refresh.Sub(s.now))}
		}
	}
	if o, wait := deferForBudget(s, finch.EndpointCreateSession); wait {
		return o
	}
	if sess != nil && !s.now.Before(sess.ExpiresAt.Time) {
		sessionsExpired.Inc()
		r.event(conn, corev1.EventTypeNormal, ReasonSessionExpired, "CreateSession", fmt.Sprintf("session %s expired before the employer connected", sess.ID))
	}
	resp, err := s.app.Client.CreateSession(ctx, req.SessionRequest)
	if err != nil {
		if connID, ok := finch.ConnectionAlreadyExists(err); ok {
			st.ConnectionID = connID
			st.Session = nil
			st.Phase = finchv1.PhaseError
			return stalled(ReasonConnectionExists,
				"Finch already has connection %s for customer %q, but Secret %s holds no access token for it. Put its token there (key %s) to adopt it, or set annotation %s to send the employer a reauthentication session",
				connID, conn.Spec.CustomerID, conn.TokenSecretName(), finchv1.AccessTokenKey, finchv1.ReauthRequestedAtAnnotation)
		}
		return r.finchError(s, "create Connect session", err)
	}
	if st.ConnectionStatus != nil && st.ConnectionStatus.Status == "disconnected" {
		// Starting over after a disconnect: the old connection is gone for good.
		clearConnection(st)
	}
	refreshed := sess != nil && sess.ID == resp.SessionID
	minutes := time.Duration(req.minutes()) * time.Minute
	st.Session = &finchv1.Session{
		ID: resp.SessionID, ConnectURL: resp.ConnectURL, Kind: finchv1.SessionConnect,
		IssuedAt: metav1.Time{Time: s.now}, ExpiresAt: metav1.Time{Time: s.now.Add(minutes)}, RequestHash: hash,
	}
	if st.FirstSessionTime == nil {
		st.FirstSessionTime = &metav1.Time{Time: s.now}
	}
	st.Phase = finchv1.PhaseAwaitingConnect
	sessionsIssued.WithLabelValues(string(finchv1.SessionConnect)).Inc()
	if refreshed {
		r.event(conn, corev1.EventTypeNormal, ReasonSessionRefreshed, "CreateSession", fmt.Sprintf("refreshed Connect session %s until %s", resp.SessionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339)))
	} else {
		r.event(conn, corev1.EventTypeNormal, ReasonSessionCreated, "CreateSession", fmt.Sprintf("created Connect session %s (expires %s): send the employer status.session.connectURL", resp.SessionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	return outcome{requeue: jitterDown(refreshTime(st.Session).Sub(s.now))}
}

func clearConnection(st *finchv1.FinchConnectionStatus) {
	st.ConnectionID, st.ProviderID, st.ConnectionType, st.ClientType = "", "", "", ""
	st.AccountID, st.CompanyID = "", ""
	st.ConnectionStatus, st.AuthenticationMethods, st.GrantedProducts = nil, nil, nil
	st.ConnectedAt, st.LastIntrospectionTime = nil, nil
}

// sessionReq is the session request plus the minutes it asked for.
type sessionReq struct{ finch.SessionRequest }

func (r sessionReq) minutes() int {
	if r.MinutesToExpire == nil {
		return 20160
	}
	return *r.MinutesToExpire
}

func sessionRequest(conn *finchv1.FinchConnection, redirect string) sessionReq {
	spec := conn.Spec
	minutes := int(spec.MinutesToExpire)
	if minutes == 0 {
		minutes = 20160
	}
	req := finch.SessionRequest{
		CustomerID: spec.CustomerID, CustomerName: spec.CustomerName, Products: products(conn),
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
	return sessionReq{req}
}

func products(conn *finchv1.FinchConnection) []string {
	out := make([]string, len(conn.Spec.Products))
	for i, p := range conn.Spec.Products {
		out[i] = string(p)
	}
	return out
}

// requestHash fingerprints the session parameters; a change refreshes the session.
func requestHash(req sessionReq) string {
	b, _ := json.Marshal(req.SessionRequest)
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
		ready, why, msg := readiness(st)
		setCondition(conds, gen, finchv1.ConditionReady, ready, why, msg)
		setCondition(conds, gen, finchv1.ConditionStalled, metav1.ConditionFalse, why, "not stalled")
		setCondition(conds, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, ReasonSucceeded, "the operator has done all it can for now")
		st.ObservedGeneration = gen
	}
	if !out.suspended && !out.deferred {
		setConnectionConditions(st, gen)
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
func readiness(st *finchv1.FinchConnectionStatus) (metav1.ConditionStatus, string, string) {
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
		return metav1.ConditionTrue, ReasonAwaitingEmployer, fmt.Sprintf("the employer must re-authenticate connection %s: send them status.session.connectURL (expires %s)",
			st.ConnectionID, st.Session.ExpiresAt.UTC().Format(time.RFC3339))
	case finchv1.PhaseConnected:
		return metav1.ConditionTrue, ReasonConnected, fmt.Sprintf("connection %s is connected (provider %s)", st.ConnectionID, st.ProviderID)
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

// setConnectionConditions derives Connected and ReauthRequired from status.
func setConnectionConditions(st *finchv1.FinchConnectionStatus, gen int64) {
	if cs := st.ConnectionStatus; cs != nil && cs.Status == "connected" && st.Phase == finchv1.PhaseConnected {
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
		setCondition(&st.Conditions, gen, finchv1.ConditionReauthRequired, metav1.ConditionTrue, ReasonReauthRequired, "a reauthentication session is waiting for the employer: status.session.connectURL")
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

// reconcileDelete runs the deletion policy, then releases the finalizer (step 7).
func (r *FinchConnectionReconciler) reconcileDelete(ctx context.Context, conn *finchv1.FinchConnection) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(conn)
	if !controllerutil.ContainsFinalizer(conn, Finalizer) {
		r.phases.forget(key)
		return ctrl.Result{}, nil
	}
	orig := conn.DeepCopy()
	now := r.Now()
	tok, err := r.secrets().readToken(ctx, conn)
	if err != nil {
		return ctrl.Result{}, err
	}
	if conn.Spec.DeletionPolicy == finchv1.DeletionPolicyDisconnect && tok.token != "" {
		if err := r.disconnect(ctx, conn, tok.token); err != nil {
			return r.deleteFailed(ctx, orig, conn, now, err)
		}
		r.event(conn, corev1.EventTypeNormal, ReasonDisconnected, "Disconnect", fmt.Sprintf("disconnected connection %s at Finch", conn.Status.ConnectionID))
	} else if tok.exists && tok.owned {
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

func (r *FinchConnectionReconciler) disconnect(ctx context.Context, conn *finchv1.FinchConnection, token string) error {
	app := &finchv1.FinchApp{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: conn.Namespace, Name: conn.AppName()}, app); err != nil {
		return fmt.Errorf("get FinchApp %q: %w", conn.AppName(), err)
	}
	resolved, err := r.Apps.Get(ctx, app)
	if err != nil {
		return err
	}
	if err := resolved.Client.Disconnect(ctx, token); err != nil && !finch.IsInvalidToken(err) {
		// An invalid token means it is already revoked: nothing left to disconnect.
		return fmt.Errorf("disconnect: %w", err)
	}
	return nil
}

// deleteFailed records a failed disconnect and backs off; after
// maxDeleteFailures it reports Stalled with how to let go by hand.
func (r *FinchConnectionReconciler) deleteFailed(ctx context.Context, orig, conn *finchv1.FinchConnection, now time.Time, cause error) (ctrl.Result, error) {
	st := &conn.Status
	rs := st.Retry
	if rs == nil {
		rs = &finchv1.RetryStatus{}
	}
	rs.Failures++
	rs.LastFailureTime = metav1.Time{Time: now}
	rs.Reason = ReasonDisconnectFailed
	wait := r.backoff(rs.Failures)
	rs.NextAttemptTime = metav1.Time{Time: now.Add(wait)}
	rs.ObservedGeneration = conn.Generation
	st.Retry = rs
	msg := fmt.Sprintf("could not disconnect at Finch (attempt %d): %v", rs.Failures, cause)
	if rs.Failures >= maxDeleteFailures {
		msg += fmt.Sprintf(". Still retrying every %s. To delete without disconnecting: kubectl patch finchconnection %s -n %s --type=merge -p '{\"metadata\":{\"finalizers\":null}}' (then disconnect in the Finch dashboard)",
			wait.Round(time.Second), conn.Name, conn.Namespace)
		setCondition(&st.Conditions, conn.Generation, finchv1.ConditionStalled, metav1.ConditionTrue, ReasonDisconnectFailed, msg)
		setCondition(&st.Conditions, conn.Generation, finchv1.ConditionReady, metav1.ConditionFalse, ReasonDisconnectFailed, msg)
	}
	r.event(conn, corev1.EventTypeWarning, ReasonDisconnectFailed, "Disconnect", msg)
	if err := r.Status().Patch(ctx, conn, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("patch status: %w", err)
	}
	return ctrl.Result{RequeueAfter: wait}, nil
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
