package inbound_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

func initialSyncEvent(connectionID, eventType string) []byte {
	return []byte(fmt.Sprintf(`{"account_id":"acc","company_id":"comp","connection_id":%q,"event_type":%q,"data":{"job_id":"job-1","job_url":"https://api.tryfinch.com/jobs/automated/job-1"}}`,
		connectionID, eventType))
}

// An employer connects; the simulator delivers Finch's signed initial data
// sync webhooks after a delay; the connection gets status.initialSync, an
// Event per sync, the metric, and DataSynced=True, which is what
// `kubectl wait --for=condition=DataSynced` waits for.
func TestInitialSyncWebhooksMakeDataSynced(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.sim.SetInitialSync(finchsim.InitialSync{Enabled: true, Delay: 300 * time.Millisecond})
	org, pay := counter(inbound.InitialSyncsTotal, finch.SyncOrganization), counter(inbound.InitialSyncsTotal, finch.SyncPayroll)

	f.newConnection("acme", "acme", func(c *finchv1.FinchConnection) {
		c.Spec.Products = []finchv1.Product{"company", "directory", "payment"}
	})
	conn := f.waitSession("acme", finchv1.SessionConnect)
	p := get(t, browser, conn.Status.Session.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusOK), p.body)
	conn, _ = f.waitConnected("acme")

	g.Eventually(func(g Gomega) {
		c := f.connIn(g, "acme")
		cond := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionDataSynced)
		g.Expect(cond).NotTo(BeNil())
		g.Expect(cond.Status).To(Equal(metav1.ConditionTrue), cond.Message)
		g.Expect(cond.Reason).To(Equal(finchv1.ReasonDataSynced))
		g.Expect(c.Status.InitialSync).NotTo(BeNil())
		g.Expect(c.Status.InitialSync.Organization).NotTo(BeNil())
		g.Expect(c.Status.InitialSync.Payroll).NotTo(BeNil())
		g.Expect(f.events(g, "FinchConnection", "acme", finchv1.ReasonInitialSyncSucceeded)).To(HaveLen(2))
	}).Should(Succeed())
	g.Expect(counter(inbound.InitialSyncsTotal, finch.SyncOrganization)).To(Equal(org + 1))
	g.Expect(counter(inbound.InitialSyncsTotal, finch.SyncPayroll)).To(Equal(pay + 1))
	g.Expect(f.sim.WebhookDeliveries()).To(Equal(2), "both answered 2xx")

	// Finch delivering the same sync again (a new event id) changes nothing.
	synced := f.getConn("acme").Status.InitialSync.Organization.Time
	dups := counter(inbound.WebhooksTotal, inbound.WebhookDuplicate)
	status, _ := do(t, f.signedWebhook(f.app, initialSyncEvent(conn.Status.ConnectionID, finch.EventInitialSyncOrg), "msg_again", time.Now(), f.webhookSecret))
	g.Expect(status).To(Equal(200))
	g.Expect(counter(inbound.WebhooksTotal, inbound.WebhookDuplicate)).To(Equal(dups + 1))
	g.Expect(f.getConn("acme").Status.InitialSync.Organization.Time).To(Equal(synced))
	g.Expect(counter(inbound.InitialSyncsTotal, finch.SyncOrganization)).To(Equal(org + 1))
}

// Unknown event types, and job events the operator does not act on, are
// still acknowledged (200) and ignored.
func TestUnknownJobEventsIgnored(t *testing.T) {
	f := newFixture(t)
	g := f.g
	conn, _ := f.connectViaRedirect("acme", "acme")
	for i, typ := range []string{"job.initial_data_sync_benefits.succeeded", "job.data_sync_all.completed", "job.initial_data_sync_org.failed", "brand.new_event"} {
		n := counter(inbound.WebhooksTotal, inbound.WebhookIgnoredEventType)
		status, body := do(t, f.signedWebhook(f.app, initialSyncEvent(conn.Status.ConnectionID, typ), "msg_u"+strconv.Itoa(i), time.Now(), f.webhookSecret))
		g.Expect(status).To(Equal(200), typ)
		g.Expect(body).To(Equal(`{"status":"ok"}` + "\n"))
		g.Expect(counter(inbound.WebhooksTotal, inbound.WebhookIgnoredEventType)).To(Equal(n+1), typ)
	}
	c := f.getConn("acme")
	g.Expect(c.Status.InitialSync).To(BeNil())
	g.Expect(meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionDataSynced)).To(BeFalse())
}

// The sync webhook can come before the controller has put connection_id in
// status (the callback stores the token first): the token Secret names the
// connection, so the event is not lost.
func TestInitialSyncBeforeStatusHasConnectionID(t *testing.T) {
	f := newFixture(t)
	g := f.g
	// Suspended: no Finch call, so status never learns the connection ID.
	f.newConnection("acme", "acme", func(c *finchv1.FinchConnection) { c.Spec.Suspend = true })
	f.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "acme-finch-token", Labels: map[string]string{finchv1.ConnectionLabel: "acme"},
			Annotations: map[string]string{finchv1.TokenConnectionIDAnnotation: "conn-early"}},
		Data: map[string][]byte{finchv1.AccessTokenKey: []byte("tok"), finchv1.ConnectionIDKey: []byte("conn-early")},
	})
	// The server reads the token Secret from the cache.
	g.Eventually(func() error {
		return f.e.cached.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "acme-finch-token"}, &corev1.Secret{})
	}).Should(Succeed())
	accepted := counter(inbound.WebhooksTotal, inbound.WebhookAccepted)
	status, _ := do(t, f.signedWebhook(f.app, initialSyncEvent("conn-early", finch.EventInitialSyncOrg), "msg_early", time.Now(), f.webhookSecret))
	g.Expect(status).To(Equal(200))
	g.Expect(counter(inbound.WebhooksTotal, inbound.WebhookAccepted)).To(Equal(accepted + 1))
	// Answered once queued: the write lands shortly after.
	g.Eventually(func(g Gomega) {
		c := f.getConn("acme")
		g.Expect(c.Status.ConnectionID).To(BeEmpty())
		g.Expect(c.Status.InitialSync).NotTo(BeNil())
		g.Expect(c.Status.InitialSync.Organization).NotTo(BeNil())
	}).Should(Succeed())
	// Another connection's ID is not matched through this Secret.
	status, _ = do(t, f.signedWebhook(f.app, initialSyncEvent("conn-other", finch.EventInitialSyncPayroll), "msg_other", time.Now(), f.webhookSecret))
	g.Expect(status).To(Equal(200))
	g.Expect(f.getConn("acme").Status.InitialSync.Payroll).To(BeNil())
}
