package controllers

import (
	"context"
	"errors"
	"fmt"
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
	client.Client
	Apps     *apps.Registry
	Recorder recorder.EventRecorder
	// penalties names apps whose connections met Finch's per-IP penalty.
	penalties <-chan event.GenericEvent
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
	orig := app.DeepCopy()
	st := &app.Status
	gen := app.Generation
	st.WebhookURL = apps.WebhookURL(app.Spec.PublicURL, req.NamespacedName)

	counts, err := r.countConnections(ctx, app)
	if err != nil {
		return ctrl.Result{}, err
	}
	st.Connections = counts

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
	switch {
	case cfgErr != nil:
	case resolved.CredentialsRejected():
		msg := fmt.Sprintf("Finch rejected the client credentials in Secret %s (invalid_client): fix them; connections resume when the Secret changes", app.Spec.CredentialsSecretRef.Name)
		setCondition(&st.Conditions, gen, finchv1.ConditionReady, metav1.ConditionFalse, finchv1.ReasonInvalidCredentials, msg)
		setCondition(&st.Conditions, gen, finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonInvalidCredentials, msg)
		setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, finchv1.ReasonInvalidCredentials, msg)
	default:
		msg := "credentials Secret found and well-formed"
		if resolved.WebhookSecret == "" {
			msg += "; no webhookSecretRef, so webhooks are rejected and introspection polling is the only health check"
		}
		setCondition(&st.Conditions, gen, finchv1.ConditionReady, metav1.ConditionTrue, finchv1.ReasonSucceeded, msg)
		setCondition(&st.Conditions, gen, finchv1.ConditionStalled, metav1.ConditionFalse, finchv1.ReasonSucceeded, "not stalled")
		setCondition(&st.Conditions, gen, finchv1.ConditionReconciling, metav1.ConditionFalse, finchv1.ReasonSucceeded, "up to date")
	}
	st.ObservedGeneration = gen
	result := r.penaltyCondition(app)
	if equality.Semantic.DeepEqual(orig.Status, app.Status) {
		return result, nil
	}
	if r.Recorder != nil && readyStatus(orig) != readyStatus(app) {
		typ := corev1.EventTypeNormal
		if readyStatus(app) != metav1.ConditionTrue {
			typ = corev1.EventTypeWarning
		}
		c := meta.FindStatusCondition(app.Status.Conditions, finchv1.ConditionReady)
		events.Record(r.Recorder, app, typ, c.Reason, "Reconcile", c.Message)
	}
	// An update, not a merge patch: counts from a stale cache must conflict
	// and be recomputed, not be merged into newer ones.
	if r.Recorder != nil && conditionStatus(orig, finchv1.ConditionRateLimited) != conditionStatus(app, finchv1.ConditionRateLimited) &&
		conditionStatus(app, finchv1.ConditionRateLimited) == metav1.ConditionTrue {
		c := meta.FindStatusCondition(app.Status.Conditions, finchv1.ConditionRateLimited)
		events.Record(r.Recorder, app, corev1.EventTypeWarning, c.Reason, "FinchCall", c.Message)
	}
	if err := r.Status().Update(ctx, app); apierrors.IsConflict(err) {
		// Expected (see above): recount from the newer object, without
		// logging an error for it.
		return ctrl.Result{RequeueAfter: staleCacheDelay}, nil
	} else if err != nil {
		return result, client.IgnoreNotFound(err)
	}
	return result, nil
}

// penaltyCondition shows Finch's per-IP penalty (finch_api_ip_rl) on the app:
// every Finch call of the operator waits until it ends, and the condition is
// cleared then.
func (r *FinchAppReconciler) penaltyCondition(app *finchv1.FinchApp) ctrl.Result {
	conds := &app.Status.Conditions
	var until time.Time
	if r.Apps.IPGuard != nil {
		until = r.Apps.IPGuard.PausedUntil()
	}
	if left := time.Until(until); left > 0 {
		setCondition(conds, app.Generation, finchv1.ConditionRateLimited, metav1.ConditionTrue, finchv1.ReasonIPRateLimited, fmt.Sprintf(
			"Finch answered 429 finch_api_ip_rl: the operator's address exceeded Finch's per-IP limit (1,000 requests per 5 minutes), so every Finch call of every app waits until %s. Lower --finch-ip-budget or the apps' spec.rateLimit if this recurs",
			until.UTC().Format(time.RFC3339)))
		return ctrl.Result{RequeueAfter: left + time.Second}
	}
	if meta.FindStatusCondition(*conds, finchv1.ConditionRateLimited) != nil {
		setCondition(conds, app.Generation, finchv1.ConditionRateLimited, metav1.ConditionFalse, finchv1.ReasonSucceeded, "no Finch rate-limit penalty in force")
	}
	return ctrl.Result{}
}

func conditionStatus(app *finchv1.FinchApp, typ string) metav1.ConditionStatus {
	if c := meta.FindStatusCondition(app.Status.Conditions, typ); c != nil {
		return c.Status
	}
	return ""
}

func (r *FinchAppReconciler) countConnections(ctx context.Context, app *finchv1.FinchApp) (finchv1.ConnectionCounts, error) {
	list := &finchv1.FinchConnectionList{}
	// Read-only, so no deep copy: at 10,000 connections a copying List held
	// about 18 MB for every app status update.
	if err := r.List(ctx, list, client.InNamespace(app.Namespace), client.MatchingFields{index.ConnectionApp: app.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return finchv1.ConnectionCounts{}, fmt.Errorf("list connections: %w", err)
	}
	var c finchv1.ConnectionCounts
	for i := range list.Items {
		c.Total++
		switch list.Items[i].Status.Phase {
		case finchv1.PhaseAwaitingConnect:
			c.AwaitingConnect++
		case finchv1.PhaseConnecting:
			c.Connecting++
		case finchv1.PhaseConnected:
			c.Connected++
		case finchv1.PhaseReauthRequired:
			c.ReauthRequired++
		case finchv1.PhaseError:
			c.Error++
		case finchv1.PhaseDisconnected:
			c.Disconnected++
		default:
			c.Pending++
		}
	}
	return c, nil
}

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
	// Only a phase change (or a new or deleted connection) changes the counts.
	// Recounts are delayed and coalesced: a burst of a thousand connections
	// changing phase costs one status write per countsDelay, not a thousand.
	recount := func(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if conn, ok := o.(*finchv1.FinchConnection); ok {
			q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: conn.Namespace, Name: conn.AppName()}}, countsDelay)
		}
	}
	connections := handler.Funcs{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			recount(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, ok1 := e.ObjectOld.(*finchv1.FinchConnection)
			n, ok2 := e.ObjectNew.(*finchv1.FinchConnection)
			if ok1 && ok2 && o.Status.Phase != n.Status.Phase {
				recount(n, q)
			}
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			recount(e.Object, q)
		},
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("finchapp").
		For(&finchv1.FinchApp{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&finchv1.FinchConnection{}, connections).
		WatchesRawSource(secretNames.Source(appsForSecret)).
		WatchesRawSource(source.Channel(r.penalties, &handler.EnqueueRequestForObject{})).
		Complete(r)
}
