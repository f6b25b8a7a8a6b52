// DataSynced: whether Finch reported the connection's initial data syncs.

package controllers

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// setDataSynced derives condition DataSynced from status.initialSync, which
// the webhook receiver writes when Finch reports an initial data sync
// (job.initial_data_sync_org.succeeded, job.initial_data_sync_payroll.succeeded;
// docs/finch-api.md#webhooks). It is True once every sync the connection's
// products call for (finch.RequiredInitialSyncs) succeeded, or, for products
// of neither kind, once any did; so `kubectl wait --for=condition=DataSynced`
// waits until the data can be read.
func setDataSynced(conn *finchv1.FinchConnection, gen int64) {
	st := &conn.Status
	done, pending := initialSyncs(conn)
	switch {
	case len(pending) == 0 && len(done) > 0:
		setCondition(&st.Conditions, gen, finchv1.ConditionDataSynced, metav1.ConditionTrue, finchv1.ReasonDataSynced,
			fmt.Sprintf("Finch reports the initial %s data sync succeeded", strings.Join(done, " and ")))
	case st.ConnectionID == "" && len(done) == 0:
		setCondition(&st.Conditions, gen, finchv1.ConditionDataSynced, metav1.ConditionFalse, finchv1.ReasonNotConnected,
			"the employer has not connected yet; Finch syncs the data after they do")
	default:
		want := "an initial data sync"
		if len(pending) > 0 {
			want = "the initial " + strings.Join(pending, " and ") + " data sync"
		}
		setCondition(&st.Conditions, gen, finchv1.ConditionDataSynced, metav1.ConditionFalse, finchv1.ReasonAwaitingInitialSync,
			fmt.Sprintf("waiting for Finch to report %s (webhooks job.initial_data_sync_*.succeeded; the FinchApp needs webhookSecretRef and the webhook registered at Finch); assisted connections can take days", want))
	}
}

// initialSyncs are the kinds of initial sync Finch reported and those the
// connection still waits for: the granted products decide, else the
// requested ones.
func initialSyncs(conn *finchv1.FinchConnection) (done, pending []string) {
	products := conn.Status.GrantedProducts
	if len(products) == 0 {
		products = conn.ProductNames()
	}
	is := conn.Status.InitialSync
	synced := map[string]bool{}
	if is != nil {
		synced[finch.SyncOrganization] = is.Organization != nil
		synced[finch.SyncPayroll] = is.Payroll != nil
	}
	for _, k := range []string{finch.SyncOrganization, finch.SyncPayroll} {
		if synced[k] {
			done = append(done, k)
		}
	}
	for _, k := range finch.RequiredInitialSyncs(products) {
		if !synced[k] {
			pending = append(pending, k)
		}
	}
	return done, pending
}

// initialSyncRecorded passes updates that change status.initialSync (the
// webhook receiver's write), so DataSynced follows at once.
func initialSyncRecorded() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			oldConn, ok1 := e.ObjectOld.(*finchv1.FinchConnection)
			newConn, ok2 := e.ObjectNew.(*finchv1.FinchConnection)
			return ok1 && ok2 && !equality.Semantic.DeepEqual(oldConn.Status.InitialSync, newConn.Status.InitialSync)
		},
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
