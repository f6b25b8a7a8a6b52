package controllers

import (
	"cmp"
	"context"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/index"
	"github.com/connectops/finch-operator/internal/secretnames"
)

// ClusterFinchAppReconciler is the FinchApp controller for ClusterFinchApps:
// Secrets in the cluster resource namespace, and counts per namespace.
type ClusterFinchAppReconciler struct {
	appStatus
	penalties <-chan event.GenericEvent
	wakeups   *appWakeups
}

// +kubebuilder:rbac:groups=finch.connectops.dev,resources=clusterfinchapps,verbs=get;list;watch
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=clusterfinchapps/status,verbs=get;update;patch

// Reconcile resolves the app and publishes its status.
func (r *ClusterFinchAppReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	app := &finchv1.ClusterFinchApp{}
	if err := r.Get(ctx, types.NamespacedName{Name: req.Name}, app); err != nil {
		if apierrors.IsNotFound(err) {
			r.Apps.Forget(types.NamespacedName{Name: req.Name})
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	return r.sync(ctx, app, func() error {
		list, err := r.listConnections(ctx, app)
		if err != nil {
			return err
		}
		st := &app.Status
		st.SecretNamespace = r.Apps.ClusterResourceNamespace
		st.Connections = countPhases(list.Items)
		st.NamespaceCount, st.Namespaces = countNamespaces(list.Items)
		return nil
	})
}

// countNamespaces counts connections by namespace and phase: the number of
// namespaces, and the busiest MaxNamespaceCounts of them (most connections
// first, then by name), so the status stays bounded.
func countNamespaces(items []finchv1.FinchConnection) (int32, []finchv1.NamespaceConnectionCounts) {
	byNS := map[string]*finchv1.NamespaceConnectionCounts{}
	for i := range items {
		c := &items[i]
		if !counted(c) {
			continue
		}
		n := byNS[c.Namespace]
		if n == nil {
			n = &finchv1.NamespaceConnectionCounts{Namespace: c.Namespace}
			byNS[c.Namespace] = n
		}
		n.Add(c.Status.Phase)
	}
	out := make([]finchv1.NamespaceConnectionCounts, 0, len(byNS))
	for _, n := range byNS {
		out = append(out, *n)
	}
	slices.SortFunc(out, func(a, b finchv1.NamespaceConnectionCounts) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), cmp.Compare(a.Namespace, b.Namespace))
	})
	if len(out) > finchv1.MaxNamespaceCounts {
		out = out[:finchv1.MaxNamespaceCounts]
	}
	if len(out) == 0 {
		out = nil
	}
	return int32(len(byNS)), out
}

func (r *ClusterFinchAppReconciler) setupWithManager(mgr ctrl.Manager, secretNames *secretnames.Index) error {
	c := mgr.GetClient()
	// Only Secrets in the cluster resource namespace belong to ClusterFinchApps.
	appsForSecret := func(ctx context.Context, e secretnames.Event) []reconcile.Request {
		if e.Key.Namespace != r.Apps.ClusterResourceNamespace {
			return nil
		}
		list := &finchv1.ClusterFinchAppList{}
		if err := c.List(ctx, list, client.MatchingFields{index.AppSecret: e.Key.Name}); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, a := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: a.Name}})
		}
		return reqs
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("clusterfinchapp").
		For(&finchv1.ClusterFinchApp{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&finchv1.FinchConnection{}, recountApp(true)).
		WatchesRawSource(secretNames.Source(appsForSecret)).
		WatchesRawSource(source.Channel(r.penalties, &handler.EnqueueRequestForObject{})).
		WatchesRawSource(r.wakeups.source(true)).
		Complete(r)
}
