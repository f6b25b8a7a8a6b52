package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/events"
	"github.com/connectops/finch-operator/internal/index"
	"github.com/connectops/finch-operator/internal/secretnames"
)

// countsDelay coalesces recounts of an app's connections by phase.
const countsDelay = 2 * time.Second

// FinchAppReconciler checks a FinchApp's Secrets, (re)builds its Finch client
// in the registry and counts its connections by phase.
type FinchAppReconciler struct {
	appStatus
	// penalties names apps whose connections met Finch's per-IP penalty.
	penalties <-chan event.GenericEvent
	// wakeups names apps whose Finch application gained or lost an app.
	wakeups *appWakeups
}

// appStatus is what the FinchApp and ClusterFinchApp controllers share: the
// app's readiness, its public URLs and its connection counts.
type appStatus struct {
	client.Client
	Apps     *apps.Registry
	Recorder recorder.EventRecorder
}

// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchapps,verbs=get;list;watch
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchapps/status,verbs=get;update;patch

// Reconcile resolves the app and publishes its status.
func (r *FinchAppReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	app := &finchv1.FinchApp{}
	if err := r.Get(ctx, req.NamespacedName, app); err != nil {
		if apierrors.IsNotFound(err) {
			r.Apps.Forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	return r.sync(ctx, app, func() error {
		list, err := r.listConnections(ctx, app)
		if err != nil {
			return err
		}
		app.Status.Connections = countPhases(list.Items)
		return nil
	})
}

// sync publishes an app's status: count fills in the connection counts,
// then the app is resolved and its conditions set; one update at the end.
func (r *appStatus) sync(ctx context.Context, app finchv1.AppObject, count func() error) (ctrl.Result, error) {
	orig := app.DeepCopyObject()
	key := finchv1.AppKeyOf(app)
	st := app.AppStatus()
	gen := app.GetGeneration()
	st.WebhookURL = apps.WebhookURL(app.AppSpec().PublicURL, key)
	if err := count(); err != nil {
		return ctrl.Result{}, err
	}

	resolved, err := r.Apps.Load(ctx, app)
	var cfgErr *apps.ConfigError
	switch {
	case errors.As(err, &cfgErr):
		setCondition(&st.Conditions, gen, finchv1.ConditionReady, metav1.ConditionFalse, cfgErr.Reason, cfgErr.Message)
		setCondition(&st.Conditions, gen, finchv1.ConditionStalled, metav1.ConditionTrue, cfgErr.Reason, cfgErr.Message)
		setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, cfgErr.Reason, "waiting for the Secret to be fixed")
	case err != nil:
		return ctrl.Result{}, err
	}
	if resolved != nil {
		st.CallbackURL, st.CallbackSecretName = resolved.CallbackURL(), resolved.CallbackSecret
	}
	sharing, shared := r.Apps.Sharing(key)
	st.FinchApplication = nil
	if shared {
		st.FinchApplication = applicationStatus(sharing)
	}
	switch {
	case cfgErr != nil:
	case resolved.CredentialsRejected():
		msg := resolved.CredentialsRejectedMessage() + "; connections resume when the Secret changes"
		setCondition(&st.Conditions, gen, finchv1.ConditionReady, metav1.ConditionFalse, finchv1.ReasonInvalidCredentials, msg)
		setCondition(&st.Conditions, gen, finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonInvalidCredentials, msg)
		setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, finchv1.ReasonInvalidCredentials, msg)
	default:
		msg := "credentials Secret found and well-formed"
		if resolved.WebhookSecret == "" {
			msg += "; no webhookSecretRef, so webhooks are rejected and introspection polling is the only health check"
		}
		if shared {
			msg += sharingMessage(sharing)
		}
		setCondition(&st.Conditions, gen, finchv1.ConditionReady, metav1.ConditionTrue, finchv1.ReasonSucceeded, msg)
		setCondition(&st.Conditions, gen, finchv1.ConditionStalled, metav1.ConditionFalse, finchv1.ReasonSucceeded, "not stalled")
		setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, finchv1.ReasonSucceeded, "up to date")
	}
	if orig.(finchv1.AppObject).AppStatus().ObservedGeneration != gen {
		r.specWarnings(app) // once per spec change
	}
	st.ObservedGeneration = gen
	result := r.penaltyCondition(app, resolved)
	if equality.Semantic.DeepEqual(orig, app) {
		return result, nil
	}
	was := orig.(finchv1.AppObject)
	if r.Recorder != nil && readyStatus(was) != readyStatus(app) {
		typ := corev1.EventTypeNormal
		if readyStatus(app) != metav1.ConditionTrue {
			typ = corev1.EventTypeWarning
		}
		c := meta.FindStatusCondition(st.Conditions, finchv1.ConditionReady)
		events.Record(r.Recorder, app, typ, c.Reason, "Reconcile", c.Message)
	}
	if r.Recorder != nil && conditionStatus(was, finchv1.ConditionRateLimited) != conditionStatus(app, finchv1.ConditionRateLimited) &&
		conditionStatus(app, finchv1.ConditionRateLimited) == metav1.ConditionTrue {
		c := meta.FindStatusCondition(st.Conditions, finchv1.ConditionRateLimited)
		events.Record(r.Recorder, app, corev1.EventTypeWarning, c.Reason, "FinchCall", c.Message)
	}
	// An update, not a merge patch: counts from a stale cache must conflict
	// and be recomputed, not be merged into newer ones.
	if err := r.Status().Update(ctx, app); apierrors.IsConflict(err) {
		// Expected (see above): recount from the newer object, without
		// logging an error for it.
		return ctrl.Result{RequeueAfter: staleCacheDelay}, nil
	} else if err != nil {
		return result, client.IgnoreNotFound(err)
	}
	return result, nil
}

// specWarnings records a Warning Event for each spec field that works but
// should be changed: the deprecated spec.apiVersion, and insecureAPIURL when
// it lets the credentials travel in clear text.
func (r *appStatus) specWarnings(app finchv1.AppObject) {
	spec := app.AppSpec()
	if spec.DeprecatedAPIVersion != "" {
		msg := "spec.apiVersion is deprecated; rename it to spec.finchAPIVersion"
		if spec.FinchAPIVersion == "" {
			msg += fmt.Sprintf(" (its value, %s, is used while spec.finchAPIVersion is empty)", spec.DeprecatedAPIVersion)
		}
		events.Record(r.Recorder, app, corev1.EventTypeWarning, finchv1.ReasonDeprecatedField, "Reconcile", msg)
	}
	if host, insecure := apps.InsecureAPIURL(spec); insecure {
		events.Record(r.Recorder, app, corev1.EventTypeWarning, finchv1.ReasonInsecureAPIURL, "Reconcile", fmt.Sprintf(
			"spec.insecureAPIURL is true and spec.apiURL is http:// to %s: the client secret and access tokens cross the network in clear text; use an https:// apiURL (or a loopback host for a local simulator) and remove insecureAPIURL",
			host))
	}
}

// applicationStatus is status.finchApplication: the Finch application, its
// budget in effect and the other app objects sharing it (bounded).
func applicationStatus(s apps.Sharing) *finchv1.FinchApplicationStatus {
	fa := &finchv1.FinchApplicationStatus{ID: s.ID, BudgetConfigMap: s.BudgetConfigMap, SharedWithCount: int32(len(s.Others)),
		RateLimit: &finchv1.RateLimit{Requests: int32(s.InEffect.Requests), Window: &metav1.Duration{Duration: s.InEffect.Window}}}
	for _, k := range s.Others[:min(len(s.Others), finchv1.MaxSharedWith)] {
		fa.SharedWith = append(fa.SharedWith, appReference(k))
	}
	return fa
}

func appReference(k types.NamespacedName) finchv1.AppObjectReference {
	if k.Namespace == "" {
		return finchv1.AppObjectReference{Kind: finchv1.ClusterFinchAppKind, Name: k.Name}
	}
	return finchv1.AppObjectReference{Kind: finchv1.FinchAppKind, Namespace: k.Namespace, Name: k.Name}
}

// sharingMessage tells, in the Ready message, which other apps share the
// app's Finch application and budget, and when the app's own spec.rateLimit
// is not the one in effect ("" when the app is alone and its own applies).
func sharingMessage(s apps.Sharing) string {
	var msg string
	if n := len(s.Others); n > 0 {
		names := make([]string, 0, 3)
		for _, k := range s.Others[:min(n, 3)] {
			names = append(names, apps.KeyString(k))
		}
		more := ""
		if n > 3 {
			more = fmt.Sprintf(" and %d more", n-3)
		}
		msg = fmt.Sprintf("; shares Finch application %s (the same apiURL and client_id) and its request budget with %s%s (status.finchApplication)",
			s.ID, strings.Join(names, ", "), more)
	}
	if s.Declared != s.InEffect {
		msg += fmt.Sprintf("; spec.rateLimit (%s) is not in effect: another app of the same Finch application declares a stricter one, and the strictest, %s, applies to all of them",
			apps.BudgetConfigString(s.Declared), apps.BudgetConfigString(s.InEffect))
	}
	return msg
}

// penaltyCondition shows Finch's per-IP penalty (finch_api_ip_rl) on the app:
// every Finch call of the apps using its API host waits until it ends, and
// the condition is cleared then.
func (r *appStatus) penaltyCondition(app finchv1.AppObject, resolved *apps.App) ctrl.Result {
	conds := &app.AppStatus().Conditions
	var until time.Time
	host := ""
	if resolved != nil && resolved.IPGuard != nil {
		until, host = resolved.IPGuard.PausedUntil(), resolved.IPGuard.Host()
	}
	if left := time.Until(until); left > 0 {
		setCondition(conds, app.GetGeneration(), finchv1.ConditionRateLimited, metav1.ConditionTrue, finchv1.ReasonIPRateLimited, fmt.Sprintf(
			"Finch at %s answered 429 finch_api_ip_rl: the operator's address exceeded Finch's per-IP limit (1,000 requests per 5 minutes), so every Finch call of every app using %s waits until %s. Lower --finch-ip-budget or the apps' spec.rateLimit if this recurs",
			host, host, until.UTC().Format(time.RFC3339)))
		return ctrl.Result{RequeueAfter: left + time.Second}
	}
	// False from the first resolve on, so `kubectl get fapp -o wide` shows
	// False rather than an empty Rate Limited column.
	if resolved != nil || meta.FindStatusCondition(*conds, finchv1.ConditionRateLimited) != nil {
		setCondition(conds, app.GetGeneration(), finchv1.ConditionRateLimited, metav1.ConditionFalse, finchv1.ReasonSucceeded, "no Finch rate-limit penalty in force")
	}
	return ctrl.Result{}
}

func conditionStatus(app finchv1.AppObject, typ string) metav1.ConditionStatus {
	if c := meta.FindStatusCondition(app.AppStatus().Conditions, typ); c != nil {
		return c.Status
	}
	return ""
}

// listConnections lists an app's connections, read-only: no deep copy (at
// 10,000 connections a copying List held about 18 MB for every app status
// update).
func (r *appStatus) listConnections(ctx context.Context, app finchv1.AppObject) (*finchv1.FinchConnectionList, error) {
	list := &finchv1.FinchConnectionList{}
	opts := append(index.ForApp(finchv1.AppKeyOf(app)), client.UnsafeDisableDeepCopy)
	if err := r.List(ctx, list, opts...); err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	return list, nil
}

// countPhases counts connections by phase, leaving out those being deleted.
func countPhases(items []finchv1.FinchConnection) finchv1.ConnectionCounts {
	var c finchv1.ConnectionCounts
	for i := range items {
		if counted(&items[i]) {
			c.Add(items[i].Status.Phase)
		}
	}
	return c
}

// counted reports whether an app's counts include conn: not once its
// deletion started. A deletion can wait long for its finalizers (a
// Disconnect retried while Finch is down, another controller's finalizer),
// and the employer is leaving either way.
func counted(conn *finchv1.FinchConnection) bool { return conn.DeletionTimestamp.IsZero() }

func (r *FinchAppReconciler) setupWithManager(mgr ctrl.Manager, secretNames *secretnames.Index) error {
	c := mgr.GetClient()
	appsForSecret := func(ctx context.Context, e secretnames.Event) []reconcile.Request {
		list := &finchv1.FinchAppList{}
		if err := c.List(ctx, list, client.InNamespace(e.Key.Namespace), client.MatchingFields{index.AppSecret: e.Key.Name}); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, a := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&a)})
		}
		return reqs
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("finchapp").
		For(&finchv1.FinchApp{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&finchv1.FinchConnection{}, recountApp(false)).
		WatchesRawSource(secretNames.Source(appsForSecret)).
		WatchesRawSource(source.Channel(r.penalties, &handler.EnqueueRequestForObject{})).
		WatchesRawSource(r.wakeups.source(false)).
		Complete(r)
}

// appWakeups passes the registry's notices (another app joined or left an
// app's Finch application, so its status.finchApplication changes) to the
// FinchApp or ClusterFinchApp controller. A notice before a controller
// started is dropped: its first reconcile of every app reads the registry
// anyway.
type appWakeups struct {
	mu            sync.Mutex
	apps, cluster workqueue.TypedRateLimitingInterface[reconcile.Request]
}

func (w *appWakeups) notify(key types.NamespacedName) {
	w.mu.Lock()
	q := w.apps
	if key.Namespace == "" {
		q = w.cluster
	}
	w.mu.Unlock()
	if q != nil {
		// Delayed and coalesced like the counts: N apps of one application
		// loading at start wake each other N times, and cost one update each.
		q.AddAfter(reconcile.Request{NamespacedName: key}, countsDelay)
	}
}

// source is the controller's end of the notices (cluster: ClusterFinchApps').
func (w *appWakeups) source(cluster bool) source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if cluster {
			w.cluster = q
		} else {
			w.apps = q
		}
		return nil
	})
}

// recountApp enqueues the app of a connection whose phase changed (or that
// was created, began its deletion or is gone): the FinchApps' (cluster false) or the
// ClusterFinchApps' controller. Recounts are delayed and coalesced: a burst
// of a thousand connections changing phase costs one status write per
// countsDelay, not a thousand.
func recountApp(cluster bool) handler.EventHandler {
	recount := func(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if conn, ok := o.(*finchv1.FinchConnection); ok && conn.UsesClusterApp() == cluster {
			q.AddAfter(reconcile.Request{NamespacedName: conn.AppKey()}, countsDelay)
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			recount(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, ok1 := e.ObjectOld.(*finchv1.FinchConnection)
			n, ok2 := e.ObjectNew.(*finchv1.FinchConnection)
			if ok1 && ok2 && (o.Status.Phase != n.Status.Phase || counted(o) != counted(n)) {
				recount(n, q)
			}
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			recount(e.Object, q)
		},
	}
}
