package controllers

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/events"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/index"
	"github.com/connectops/finch-operator/internal/secretnames"
)

// Options configure the controllers.
type Options struct {
	// MaxConcurrentReconciles for the FinchConnection controller (default 10).
	MaxConcurrentReconciles int
	// WatchNamespaces restricts the controllers to these namespaces (none:
	// all). operator.NewManager scopes the manager's cache to the same list.
	WatchNamespaces []string
	// HTTPClient for Finch calls (nil: the Finch client's default).
	HTTPClient *http.Client
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// RetryBase is the first delay of the persisted backoff (default 5s).
	RetryBase time.Duration
	// IPBudget is the Finch request budget of each Finch API host, shared by
	// every app calling it (one egress IP; default DefaultIPBudget).
	IPBudget budget.Config
	// FinchAPIHosts are the hosts a FinchApp's apiURL may name (the zero
	// value: api.tryfinch.com only); tests and demos add their simulator's.
	FinchAPIHosts finch.APIHosts
	// ClusterResourceNamespace holds the Secrets of ClusterFinchApps (as
	// cert-manager's ClusterIssuers'); cmd/manager's default (operator.Options)
	// is the namespace the operator runs in. ClusterFinchApps are served only
	// by a cluster-wide install (no WatchNamespaces).
	ClusterResourceNamespace string
}

// clusterApps says whether ClusterFinchApps are served: only a cluster-wide
// install may watch cluster-scoped kinds and Namespaces.
func (o Options) clusterApps() bool { return len(o.WatchNamespaces) == 0 }

// DefaultIPBudget stays under Finch's per-IP limit of 1,000 requests per 5
// minutes (developer.tryfinch.com /api-reference/development-guides/Rate-Limits,
// docs/finch-api.md#rate-limits), whose penalty is 60 minutes of 429 finch_api_ip_rl
// for every app behind the address. It applies per Finch API host (one IPGuard each).
var DefaultIPBudget = budget.Config{Requests: 900, Window: 5 * time.Minute}

// Setup registers the indexes and the controllers with the manager, the
// controllers recording Events with rec, and returns the app registry they
// share with the inbound server.
func Setup(ctx context.Context, mgr ctrl.Manager, rec *events.Recorder, opts Options) (*apps.Registry, error) {
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = 10
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := index.Setup(ctx, mgr, opts.clusterApps()); err != nil {
		return nil, fmt.Errorf("field indexes: %w", err)
	}
	// Every Secret by name (not by object): it finds FinchApp credentials and
	// migrated token Secrets, which carry no operator label, at about 100 B
	// per Secret of any other workload in the cluster.
	secretNames, err := secretnames.New(mgr.GetConfig(), mgr.GetHTTPClient(), finchv1.ConnectionLabel, opts.WatchNamespaces...)
	if err != nil {
		return nil, fmt.Errorf("secret names: %w", err)
	}
	if err := mgr.Add(secretNames); err != nil {
		return nil, err
	}
	if opts.IPBudget.Requests <= 0 || opts.IPBudget.Window <= 0 {
		opts.IPBudget = DefaultIPBudget
	}
	registry := &apps.Registry{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), HTTPClient: opts.HTTPClient,
		IPGuards: budget.NewIPGuards(opts.IPBudget), APIHosts: opts.FinchAPIHosts, ClusterResourceNamespace: opts.ClusterResourceNamespace}
	penalties, clusterPenalties := make(chan event.GenericEvent, 64), make(chan event.GenericEvent, 64)
	connections := &FinchConnectionReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), SecretMetadata: secretNames,
		Apps: registry, Recorder: rec, Now: opts.Now, RetryBase: opts.RetryBase,
		ClusterApps: opts.clusterApps(), penalties: penalties, clusterPenalties: clusterPenalties,
	}
	if err := connections.setupWithManager(mgr, secretNames, opts.MaxConcurrentReconciles); err != nil {
		return nil, fmt.Errorf("FinchConnection controller: %w", err)
	}
	shared := appStatus{Client: mgr.GetClient(), Apps: registry, Recorder: rec}
	wakeups := &appWakeups{}
	registry.Notify = wakeups.notify
	finchApps := &FinchAppReconciler{appStatus: shared, penalties: penalties, wakeups: wakeups}
	if err := finchApps.setupWithManager(mgr, secretNames); err != nil {
		return nil, fmt.Errorf("FinchApp controller: %w", err)
	}
	if opts.clusterApps() {
		cluster := &ClusterFinchAppReconciler{appStatus: shared, penalties: clusterPenalties, wakeups: wakeups}
		if err := cluster.setupWithManager(mgr, secretNames); err != nil {
			return nil, fmt.Errorf("ClusterFinchApp controller: %w", err)
		}
	}
	return registry, nil
}

// requestAnnotationsChanged passes updates that change a request annotation,
// so a manual resync reaches the reconciler while other metadata edits
// (GitOps labels, annotations) cost nothing.
func requestAnnotationsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			for _, a := range []string{finchv1.RequestedAtAnnotation, finchv1.ReauthRequestedAtAnnotation, finchv1.WebhookEventAnnotation} {
				if e.ObjectOld.GetAnnotations()[a] != e.ObjectNew.GetAnnotations()[a] {
					return true
				}
			}
			return e.ObjectOld.GetDeletionTimestamp().IsZero() && !e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// annotationChanged passes updates that change annotation a.
func annotationChanged(a string) predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetAnnotations()[a] != e.ObjectNew.GetAnnotations()[a]
		},
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func (r *FinchConnectionReconciler) setupWithManager(mgr ctrl.Manager, secretNames *secretnames.Index, workers int) error {
	c := mgr.GetClient()
	byIndex := func(opts ...client.ListOption) []reconcile.Request {
		list := &finchv1.FinchConnectionList{}
		// Only the names are read: no deep copy (an app change lists all
		// of its connections).
		if err := c.List(context.Background(), list, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, item := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&item)})
		}
		return reqs
	}
	// Token and code Secrets (labelled) map to their connection by label, in
	// the employer lane: a code handed over or a token stored by the callback
	// is an employer waiting.
	labelledSecret := enqueueEmployer(func(_ context.Context, o client.Object) []reconcile.Request {
		name := o.GetLabels()[finchv1.ConnectionLabel]
		if name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
	})
	// A webhook the inbound server recorded (Finch saying the connection
	// needs re-authentication) also goes in the employer lane.
	webhookRecorded := enqueueEmployer(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(o)}}
	})
	// Unlabelled Secrets (a migrated token) map by the token Secret name.
	unlabelledToken := func(_ context.Context, e secretnames.Event) []reconcile.Request {
		if e.Labelled {
			return nil // the labelled watch covers it
		}
		reqs := byIndex(client.InNamespace(e.Key.Namespace), client.MatchingFields{index.ConnectionTokenSecret: e.Key.Name})
		if name := finchv1.DefaultTokenSecretOwner(e.Key.Name); name != "" {
			// The connection may not exist or may name another Secret: the
			// reconcile reads its own token Secret and finds nothing to do.
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: e.Key.Namespace, Name: name}})
		}
		return reqs
	}
	// A FinchApp's spec or readiness change fans out to its connections.
	appChanged := predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return readyStatus(e.ObjectOld) != readyStatus(e.ObjectNew)
		},
	})
	// Deleting a connection wakes its duplicates (one of them may proceed now).
	siblings := handler.Funcs{DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		conn, ok := e.Object.(*finchv1.FinchConnection)
		if !ok {
			return
		}
		for _, req := range byIndex(index.ForAppValue(conn.AppKey(), index.ConnectionCustomer, conn.Spec.CustomerID)...) {
			q.Add(req)
		}
	}}
	appConnections := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return byIndex(index.ForApp(types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()})...)
	})
	b := ctrl.NewControllerManagedBy(mgr).
		Named("finchconnection").
		For(&finchv1.FinchConnection{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, requestAnnotationsChanged(), initialSyncRecorded()))).
		Watches(&corev1.Secret{}, labelledSecret).
		Watches(&finchv1.FinchApp{}, appConnections, builder.WithPredicates(appChanged)).
		Watches(&finchv1.FinchConnection{}, siblings).
		Watches(&finchv1.FinchConnection{}, webhookRecorded, builder.WithPredicates(annotationChanged(finchv1.WebhookEventAnnotation))).
		WatchesRawSource(secretNames.Source(unlabelledToken)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers})
	if r.ClusterApps {
		// A ClusterFinchApp's change (its conditions too) fans out to its
		// connections in every namespace; a namespace's label change to
		// its connections of cluster apps (they may be admitted now, or no
		// longer).
		nsConnections := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			list := &finchv1.FinchConnectionList{}
			if err := c.List(ctx, list, client.InNamespace(o.GetName()), client.UnsafeDisableDeepCopy); err != nil {
				return nil
			}
			var reqs []reconcile.Request
			for i := range list.Items {
				if list.Items[i].UsesClusterApp() {
					reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
				}
			}
			return reqs
		})
		b = b.Watches(&finchv1.ClusterFinchApp{}, appConnections, builder.WithPredicates(appChanged)).
			Watches(apps.NamespaceMeta(), nsConnections, builder.WithPredicates(labelsChanged()))
	}
	return b.Complete(r)
}

// labelsChanged passes label changes only (a namespace's labels decide
// whether a ClusterFinchApp admits it).
func labelsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
		},
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func readyStatus(o client.Object) metav1.ConditionStatus {
	app, ok := o.(finchv1.AppObject)
	if !ok {
		return ""
	}
	if c := meta.FindStatusCondition(app.AppStatus().Conditions, finchv1.ConditionReady); c != nil {
		return c.Status
	}
	return ""
}
