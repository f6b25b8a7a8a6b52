package kubectlfinch_test

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/test/live"
)

// status shows each authentication method's last sync (Finch's value
// verbatim when it is not a time) and the initial data syncs with DataSynced.
func TestStatusShowsSyncs(t *testing.T) {
	w := newWorld(t)
	acme := w.connect("acme", "acme-001")

	r := w.ok("status", "acme")
	contains(t, "status before any sync webhook", r.stdout, "Auth methods:", "credential connected, last sync",
		"Data synced:", "no initial sync reported yet", "DataSynced=False", "AwaitingInitialSync")

	if err := w.Sim.SetLastSuccessfulSync(acme.Status.ConnectionID, "sync in progress"); err != nil {
		t.Fatal(err)
	}
	w.ok("resync", "acme", "--wait", "--timeout", timeout.String())
	// What the webhook receiver records for job.initial_data_sync_org.succeeded.
	c := w.get("acme")
	patch := client.MergeFrom(c.DeepCopy())
	c.Status.InitialSync = &finchv1.InitialSyncStatus{Organization: &metav1.Time{Time: time.Now().Add(-3 * time.Hour)}}
	if err := env.Client.Status().Patch(context.Background(), c, patch); err != nil {
		t.Fatal(err)
	}
	if err := live.Poll(context.Background(), timeout, func() (bool, error) {
		c := w.get("acme")
		return meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionDataSynced) &&
			len(c.Status.AuthenticationMethods) == 1 && c.Status.AuthenticationMethods[0].LastSuccessfulSyncRaw != "", nil
	}); err != nil {
		t.Fatalf("DataSynced and the raw last sync: %v (status %+v)", err, w.get("acme").Status)
	}
	r = w.ok("status", "acme")
	contains(t, "status after the organization sync", r.stdout, `credential connected, last sync "sync in progress"`,
		"initial sync: organization 3h ago", "(DataSynced=True)", finchv1.ConditionDataSynced)
}
