package controllers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
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
	ReasonProductsChanged     = "ProductsChanged"
	ReasonIPRateLimited       = "FinchIPRateLimited"
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

	// penalties wakes the FinchApp controller when Finch's per-IP penalty starts.
	penalties chan<- event.GenericEvent

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
	productsReauth  bool   // the reauth asks for products added after connect
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
	if last, ok := r.written.Load(req.NamespacedName); ok {
		if olderVersion(conn.ResourceVersion, last.(string)) {
			return ctrl.Result{RequeueAfter: staleCacheDelay}, nil
		}
		// The cache has caught up: forget the entry (memory stays flat at scale).
		r.written.CompareAndDelete(req.NamespacedName, last)
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
	if s.app.IPGuard != nil {
		d = max(d, s.app.IPGuard.Delay())
	}
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
