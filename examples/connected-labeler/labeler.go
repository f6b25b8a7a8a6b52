// Package labeler is a toy consumer of the finch-connect-operator: when a
// FinchConnection becomes Connected, it labels the ConfigMap of the same name
// in its namespace finch.example.com/connected=true (where a real service
// would start a payroll sync or send a welcome email). Its test
// (labeler_test.go) runs it against the operator and a Finch simulator with
// the operator's public test kit, pkg/finchtest.
package labeler

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// ConnectedLabel is set to "true" on the ConfigMap of a Connected connection.
const ConnectedLabel = "finch.example.com/connected"

// Reconciler labels ConfigMaps of Connected FinchConnections.
type Reconciler struct {
	Client client.Client
}

// SetupWithManager watches FinchConnections.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("connected-labeler").For(&finchv1.FinchConnection{}).Complete(r)
}

// Reconcile labels the connection's ConfigMap once the connection is Connected.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	conn := &finchv1.FinchConnection{}
	if err := r.Client.Get(ctx, req.NamespacedName, conn); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if conn.Status.Phase != finchv1.PhaseConnected {
		return ctrl.Result{}, nil
	}
	cm := &corev1.ConfigMap{}
	if err := r.Client.Get(ctx, req.NamespacedName, cm); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil // nothing to label
		}
		return ctrl.Result{}, err
	}
	if cm.Labels[ConnectedLabel] == "true" {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFrom(cm.DeepCopy())
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels[ConnectedLabel] = "true"
	return ctrl.Result{}, r.Client.Patch(ctx, cm, patch)
}
