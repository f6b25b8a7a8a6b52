package controllers

import (
	"context"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/tokens"
)

const (
	// Finalizer is set on FinchConnections that hold a token, so deletion can
	// disconnect (Disconnect) or release the token Secret (Retain).
	Finalizer = finchv1.Finalizer

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

// FinchConnectionReconciler drives a FinchConnection through the lifecycle.
// Every decision is taken from status, Secrets and the clock; each Finch
// call's result lands in status (one patch at the end of the pass) before any
// call that depends on it, and a call that must not run twice (reauthenticate,
// disconnect) comes after a status write of its intent within the pass
// (connection_intent.go).
type FinchConnectionReconciler struct {
	client.Client
	// APIReader reads uncached (migrated token Secrets, FinchApp Secrets).
	APIReader client.Reader
	// SecretMetadata answers whether any Secret (not just labelled ones) exists.
	SecretMetadata client.Reader
	Apps           *apps.Registry
	Recorder       recorder.EventRecorder
	// Now is the clock (tests may replace it).
	Now func() time.Time
	// RetryBase is the first delay of the persisted backoff (default 5s).
	RetryBase time.Duration

	// ConnectGrace is how long a new connection waits quietly for a FinchApp
	// that is not there yet (GitOps applies both together) before it reports
	// AppNotFound (default 5s).
	ConnectGrace time.Duration

	// ClusterApps says ClusterFinchApps can be used (a cluster-wide install).
	ClusterApps bool

	// penalties and clusterPenalties wake the FinchApp and ClusterFinchApp
	// controllers when Finch's per-IP penalty starts.
	penalties, clusterPenalties chan<- event.GenericEvent

	phases connectionTracker
	// written remembers the resourceVersion of each connection's last write,
	// so a pass that reads an older copy from the cache waits instead of
	// repeating a Finch call whose result it cannot see yet.
	written sync.Map
	// calls remembers, per connection, the call behind a status.pendingCall
	// until a write without the intent is confirmed (callMemo).
	calls sync.Map
	// answered is when Finch last answered an introspection of each app's
	// connections (connection_servererror.go).
	answered sync.Map
}

// syncState carries one reconcile's inputs from step to step. What the
// steps find goes into status, the one record of each fact; what status
// implies (the phase with a token, when introspection is due, why a
// reauthentication session is published) is derived from it where needed.
type syncState struct {
	conn      *finchv1.FinchConnection
	now       time.Time
	app       *apps.App         // resolveApp
	appObject finchv1.AppObject // resolveApp: the FinchApp or ClusterFinchApp app was resolved from
	requests  requests          // takeRequests
	token     tokens.State      // readToken

	// base is the status last written (the object as read, or as an intent
	// write left it): the pass's final patch is computed against it.
	base *finchv1.FinchConnection
	// writeStatus writes the status built so far, before a call that must
	// not run twice (recordIntent).
	writeStatus func(ctx context.Context) error
	// commit makes the pass finish even if the manager stops (committable); nil: no-op.
	commit func()
}

// commitPass commits the pass to finishing (committable).
func (s *syncState) commitPass() {
	if s.commit != nil {
		s.commit()
	}
}

// step is one stage of the lifecycle. It reads and records status through s
// and returns nil to hand over to the next step, or the pass's outcome. Each
// step's comment says what of s and of status it reads and writes.
type step func(ctx context.Context, s *syncState) outcome

// steps is the lifecycle in order. Each step decides for itself
// whether it applies; the first to return an outcome ends the pass.
func (r *FinchConnectionReconciler) steps() []step {
	return append([]step{
		r.skipSuspended,   // spec.suspend: no Finch calls
		r.resolveApp,      // the FinchApp and its Finch client
		r.rejectDuplicate, // an older connection has this customerID
		r.takeRequests,    // resync, reauth and webhook annotations
		r.waitBackoff,     // the persisted backoff of a transient failure
		r.exchangeCode,    // step 4: an embedded-flow code Secret
		r.readToken,       // the token Secret
	}, r.decisions()...)
}

// decisions are the steps that decide from status, the token's state, the
// clock and Finch's answers alone (the lifecycle tables test them with a
// fake Finch).
func (r *FinchConnectionReconciler) decisions() []step {
	return []step{
		r.guardToken,          // the finalizer a stored token needs
		r.connectWithoutToken, // steps 1-3: the Connect session, no token yet
		r.introspect,          // step 5: GET /introspect when due
		r.settleSession,       // a used Connect or reauthentication session
		r.reauthenticate,      // step 6: a reauthentication session
		r.reportHealth,        // connected, or what the employer must do
	}
}

// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchconnections,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchconnections/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchconnections/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// Reconcile runs one pass of the lifecycle: the steps, then one
// summarize-and-patch.
func (r *FinchConnectionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	conn := &finchv1.FinchConnection{}
	if err := r.Get(ctx, req.NamespacedName, conn); err != nil {
		if apierrors.IsNotFound(err) {
			r.phases.forget(req.NamespacedName)
			r.written.Delete(req.NamespacedName)
			r.calls.Delete(req.NamespacedName)
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
	ctx, commit, cancel := committable(ctx)
	defer cancel()
	s := &syncState{conn: conn, now: r.Now(), base: orig, commit: commit}
	s.writeStatus = func(ctx context.Context) error { return r.writeIntent(ctx, s) }
	out := r.run(ctx, s, r.steps())
	if u, ok := out.(unseen); ok {
		return ctrl.Result{RequeueAfter: u.requeue}, nil
	}
	// summarize compares with the object as read; the patch goes against
	// what the server has (an intent write may have moved it on).
	res := r.summarize(ctx, orig, s, out)
	return r.patchStatus(ctx, s.base, conn, res)
}

// run runs steps in order until one decides the outcome.
func (r *FinchConnectionReconciler) run(ctx context.Context, s *syncState, steps []step) outcome {
	for _, st := range steps {
		if out := st(ctx, s); out != nil {
			return out
		}
	}
	return done{}
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
