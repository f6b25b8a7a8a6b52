package controllers_test

import (
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// Finch's newer SDKs (finch-api-node 10.8, finch-api-go 2.4) and docs, third
// pass (issue 24, items 4 and 5). The simulator enforces each rule.
var _ = Describe("Finch contract, newer SDKs", func() {
	It("sends spec.recordkeeping as the session's recordkeeping", func() {
		s := newScenario()
		s.newConn("acme", "acme-001", func(c *finchv1.FinchConnection) {
			c.Spec.Products = []finchv1.Product{"company", "recordkeeping"}
			c.Spec.Recordkeeping = &finchv1.Recordkeeping{Recordkeeper: "empower", PlanID: "plan-1"}
		})
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		sess, ok := s.sim.Session(c.Status.Session.ID)
		Expect(ok).To(BeTrue())
		Expect(sess.Recordkeeping).To(Equal(&finchsim.Recordkeeping{Recordkeeper: "empower", PlanID: "plan-1"}))
	})

	It("keeps each authentication method's last_successful_sync, and a value that is not a date-time as the string", func() {
		s := newScenario()
		c := s.connect("acme", "acme-001")
		Expect(c.Status.AuthenticationMethods).To(HaveLen(1))
		Expect(c.Status.AuthenticationMethods[0].LastSuccessfulSync).NotTo(BeNil(), "per method, not only top level")
		Expect(s.sim.SetLastSuccessfulSync(c.Status.ConnectionID, "sync in progress")).To(Succeed())
		s.annotate("acme", finchv1.RequestedAtAnnotation, "1")
		Eventually(func(g Gomega) {
			c := s.get("acme")
			g.Expect(c.Status.LastHandledReconcileAt).To(Equal("1"))
			g.Expect(c.Status.AuthenticationMethods).To(HaveLen(1))
			m := c.Status.AuthenticationMethods[0]
			g.Expect(m.LastSuccessfulSyncRaw).To(Equal("sync in progress"))
			g.Expect(m.LastSuccessfulSync).To(BeNil())
			g.Expect(c.Status.ConnectionStatus.LastSuccessfulSyncRaw).To(Equal("sync in progress"))
		}).Should(Succeed())
	})

	It("backs off to hours when GET /introspect keeps answering 5xx for one connection while others answer", func() {
		s := newScenario()
		s.setAppBudget(1000, time.Minute) // the budget is not under test: keep it out of the way
		a := s.connect("a", "a-001")
		s.connect("b", "b-001")
		s.sim.InjectFault(epIntrospect, finchsim.Fault{Count: -1, Status: 500, ConnectionID: a.Status.ConnectionID})
		s.annotate("a", finchv1.RequestedAtAnnotation, "check")
		// b keeps being introspected (and answered) while a fails.
		poke := 0
		Eventually(func(g Gomega) {
			poke++
			s.annotate("b", finchv1.RequestedAtAnnotation, strconv.Itoa(poke))
			c := s.get("a")
			g.Expect(c.Status.Retry).NotTo(BeNil())
			g.Expect(c.Status.Retry.Reason).To(Equal(finchv1.ReasonConnectionServerError))
			g.Expect(c.Status.Retry.NextAttemptTime.Sub(c.Status.Retry.LastFailureTime.Time)).To(BeNumerically(">=", 2*time.Hour))
			cond := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReconciling)
			g.Expect(cond).NotTo(BeNil())
			g.Expect(cond.Reason).To(Equal(finchv1.ReasonConnectionServerError))
			g.Expect(cond.Message).To(And(ContainSubstring("while it answers other connections"), ContainSubstring("few hours"),
				ContainSubstring(finchv1.RequestedAtAnnotation)))
		}, 60*time.Second, 300*time.Millisecond).Should(Succeed())
		// Bounded: a few attempts (each with the client's two retries), then nothing.
		calls := s.sim.ConnectionCalls(a.Status.ConnectionID, epIntrospect)
		AddReportEntry("GET /introspect calls for the failing connection before the hours of backoff", calls)
		Expect(calls).To(BeNumerically("<=", 3*8))
		Consistently(func() int { return s.sim.ConnectionCalls(a.Status.ConnectionID, epIntrospect) }, 3*time.Second).Should(Equal(calls))
		Expect(s.sim.Calls(epReauth)).To(BeZero())
		b := s.get("b")
		Expect(b.Status.Retry).To(BeNil())
		Expect(meta.IsStatusConditionTrue(b.Status.Conditions, finchv1.ConditionConnected)).To(BeTrue())
	})

	It("keeps the usual backoff when Finch answers 5xx for every connection", func() {
		s := newScenario()
		s.setAppBudget(1000, time.Minute)
		a := s.connect("a", "a-001")
		s.connect("b", "b-001")
		s.sim.InjectFault(epIntrospect, finchsim.Fault{Count: -1, Status: 500})
		s.annotate("a", finchv1.RequestedAtAnnotation, "check")
		for i := range 3 {
			s.annotate("b", finchv1.RequestedAtAnnotation, strconv.Itoa(i))
		}
		Eventually(func(g Gomega) {
			c := s.get("a")
			g.Expect(c.Status.Retry).NotTo(BeNil())
			g.Expect(c.Status.Retry.Failures).To(BeNumerically(">=", 5))
			// Each failure is an attempt with the client's two retries (about
			// 1.5 s idle): five take 10-20 s, longer on a loaded machine.
		}, 90*time.Second, 300*time.Millisecond).Should(Succeed())
		c := s.get("a")
		Expect(c.Status.Retry.Reason).To(Equal(finchv1.ReasonFinchUnavailable))
		Expect(c.Status.Retry.NextAttemptTime.Sub(c.Status.Retry.LastFailureTime.Time)).To(BeNumerically("<", 15*time.Minute))
		Expect(a.Status.ConnectionID).NotTo(BeEmpty())
	})

	It("derives DataSynced from status.initialSync as the webhook receiver records it", func() {
		s := newScenario()
		s.connect("acme", "acme-001", func(c *finchv1.FinchConnection) {
			c.Spec.Products = []finchv1.Product{"company", "directory", "payment"}
		})
		s.waitCondition("acme", finchv1.ConditionDataSynced, metav1.ConditionFalse, finchv1.ReasonAwaitingInitialSync)
		before := s.sim.CallCounts()
		record := func(mutate func(*finchv1.InitialSyncStatus)) {
			c := s.get("acme")
			patch := client.MergeFrom(c.DeepCopy())
			if c.Status.InitialSync == nil {
				c.Status.InitialSync = &finchv1.InitialSyncStatus{}
			}
			mutate(c.Status.InitialSync)
			Expect(k8sClient.Status().Patch(ctx, c, patch)).To(Succeed())
		}
		record(func(is *finchv1.InitialSyncStatus) { is.Organization = &metav1.Time{Time: time.Now()} })
		Eventually(func(g Gomega) {
			cond := meta.FindStatusCondition(s.get("acme").Status.Conditions, finchv1.ConditionDataSynced)
			g.Expect(cond.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(cond.Reason).To(Equal(finchv1.ReasonAwaitingInitialSync))
			g.Expect(cond.Message).To(ContainSubstring("the initial payroll data sync"), "organization is done")
		}).Should(Succeed())
		record(func(is *finchv1.InitialSyncStatus) { is.Payroll = &metav1.Time{Time: time.Now()} })
		c := s.waitCondition("acme", finchv1.ConditionDataSynced, metav1.ConditionTrue, finchv1.ReasonDataSynced)
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionDataSynced).Message).To(ContainSubstring("organization and payroll"))
		Expect(s.sim.CallCounts()).To(Equal(before), "no Finch call for it")
	})
})
