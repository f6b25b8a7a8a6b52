package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// Finch as documented, not as the simulator used to assume (issue: Finch
// contract). The simulator enforces each rule; each spec fails without the fix.
var _ = Describe("Finch contract", func() {
	It("exchanges an embedded hand-off with exactly the session's redirect_uri when the app redirects", func() {
		s := newScenario() // the app has a redirectURI: sessions carry it
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(c.Status.Session.RedirectURI).To(Equal(s.app.Spec.RedirectURI))
		sess, ok := s.sim.Session(c.Status.Session.ID)
		Expect(ok).To(BeTrue())
		Expect(sess.RedirectURI).To(Equal(s.app.Spec.RedirectURI))
		s.handOverCode("acme", c.Status.Session.ID)
		c = s.waitPhase("acme", finchv1.PhaseConnected)
		Expect(c.Status.CodeExchangeError).To(BeEmpty())
	})

	It("sends no redirect_uri at all for a connection with connectFlow Embedded", func() {
		s := newScenario()
		s.newConn("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.ConnectFlow = finchv1.ConnectFlowEmbedded })
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(c.Status.Session.RedirectURI).To(BeEmpty())
		sess, _ := s.sim.Session(c.Status.Session.ID)
		Expect(sess.RedirectURI).To(BeEmpty(), "an Embedded session carries no redirect_uri")
		Expect(c.Status.Session.ConnectURL).NotTo(ContainSubstring("state="), "no callback state for the embedded flow")
		s.handOverCode("acme", c.Status.Session.ID)
		s.waitPhase("acme", finchv1.PhaseConnected)
	})

	It("rejects an Embedded connection that also sets redirectURI at apply time", func() {
		s := newScenario()
		c := &finchv1.FinchConnection{
			ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: s.ns},
			Spec: finchv1.FinchConnectionSpec{CustomerID: "x", CustomerName: "X", Products: []finchv1.Product{"company"},
				ConnectFlow: finchv1.ConnectFlowEmbedded, RedirectURI: "https://example.com/cb"},
		}
		err := k8sClient.Create(ctx, c)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("redirectURI is for the Redirect flow"))
	})

	It("derives the status from authentication_methods when Finch sends no top-level connection_status", func() {
		s := newScenario()
		s.sim.AddApp(finchsim.AppConfig{ClientID: clientID, ClientSecret: clientSecret, OmitTopLevelStatus: true})
		c := s.connect("acme", "acme-001")
		Expect(c.Status.ConnectionStatus.Status).To(Equal("connected"))
		Expect(c.Status.AuthenticationMethods).NotTo(BeEmpty())
		Expect(meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionConnected)).To(BeTrue())
	})

	It("retries a 409 (lock timeout) instead of stalling", func() {
		s := newScenario()
		s.sim.InjectFault(epSessions, finchsim.Fault{Status: 409, Count: 3})
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionStalled)).To(BeFalse())
		Expect(s.sim.Sessions()).To(HaveLen(1))
	})

	It("records a multi-entity connection's entities and re-authenticates when one entity needs it", func() {
		s := newScenario()
		c := s.connect("acme", "acme-001")
		_, err := s.sim.AddEntities(c.Status.ConnectionID,
			finchsim.EntityInfo{ID: "11111111-1111-4111-8111-111111111111", Name: "Acme East", SourceID: "east", Status: "connected"},
			finchsim.EntityInfo{ID: "22222222-2222-4222-8222-222222222222", Name: "Acme West", SourceID: "west", Status: "connected"})
		Expect(err).NotTo(HaveOccurred())
		s.annotate("acme", finchv1.RequestedAtAnnotation, "1")
		Eventually(func(g Gomega) {
			// The connection's own entity plus the two added.
			g.Expect(s.get("acme").Status.Entities).To(HaveLen(3))
		}).Should(Succeed())
		Expect(s.sim.SetEntityStatus(c.Status.ConnectionID, "22222222-2222-4222-8222-222222222222", "reauth")).To(Succeed())
		s.annotate("acme", finchv1.RequestedAtAnnotation, "2")
		c = s.waitPhase("acme", finchv1.PhaseReauthRequired)
		Expect(c.Status.ConnectionStatus.Message).To(ContainSubstring("Acme West"))
		Expect(c.Status.Entities).To(ContainElement(finchv1.EntityStatus{ID: "22222222-2222-4222-8222-222222222222", Name: "Acme West", SourceID: "west", Status: finch.StatusReauth}))
		Expect(s.calls(epReauth)).To(Equal(1))
	})

	DescribeTable("publishes a link for a reauth session whatever field Finch puts it in",
		func(field string) {
			s := newScenario()
			s.sim.AddApp(finchsim.AppConfig{ClientID: clientID, ClientSecret: clientSecret, ReauthURLField: field})
			s.connect("acme", "acme-001")
			s.annotate("acme", finchv1.ReauthRequestedAtAnnotation, "now")
			c := s.waitPhase("acme", finchv1.PhaseReauthRequired)
			Expect(c.Status.Session.ConnectURL).To(ContainSubstring("session=" + c.Status.Session.ID))
		},
		Entry("url instead of connect_url", finchsim.URLFieldURL),
		Entry("no URL at all", finchsim.URLFieldNone),
	)

	It("lets a Disconnect deletion finish when /disconnect answers an undocumented 401", func() {
		s := newScenario()
		s.connect("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.DeletionPolicy = finchv1.DeletionPolicyDisconnect })
		// A 401 body no Finch doc describes for /disconnect.
		s.sim.InjectFault(epDisconnect, finchsim.Fault{Status: 401, Count: -1,
			Body: `{"code":401,"name":"token_revoked_somehow","message":"no longer valid"}`})
		s.deleteAndWait("acme")
		Expect(s.events("acme")).To(ContainElement(finchv1.ReasonDisconnectFailed))
	})

	It("re-authenticates once for products added after connect, then shows the new grant", func() {
		s := newScenario()
		s.connect("acme", "acme-001")
		s.update("acme", func(c *finchv1.FinchConnection) {
			c.Spec.Products = append(c.Spec.Products, "payment")
		})
		c := s.waitCondition("acme", finchv1.ConditionReauthRequired, metav1.ConditionTrue, finchv1.ReasonProductsChanged)
		Expect(c.Status.Phase).To(Equal(finchv1.PhaseReauthRequired))
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReauthRequired).Message).To(ContainSubstring("payment"))
		Expect(meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionConnected)).To(BeTrue(), "still connected while the employer is asked")
		Expect(s.calls(epReauth)).To(Equal(1))
		sess, _ := s.sim.Session(c.Status.Session.ID)
		Expect(sess.Products).To(ContainElement("payment"))

		s.handOverCode("acme", c.Status.Session.ID)
		c = s.waitPhase("acme", finchv1.PhaseConnected)
		Expect(c.Status.GrantedProducts).To(ContainElement("payment"))
		s.quiet()
		Expect(s.calls(epReauth)).To(Equal(1))

		// Finch cannot change the customer name after connect: say so.
		s.update("acme", func(c *finchv1.FinchConnection) { c.Spec.CustomerName = "Acme Renamed" })
		s.annotate("acme", finchv1.RequestedAtAnnotation, "rename")
		Eventually(func(g Gomega) {
			c := &finchv1.FinchConnection{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: "acme"}, c)).To(Succeed())
			g.Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady).Message).To(ContainSubstring("Acme Renamed"))
		}).Should(Succeed())
		Expect(s.calls(epReauth)).To(Equal(1))
	})

	It("pauses every Finch call during Finch's per-IP penalty and shows it on the FinchApp", func() {
		s := newScenario()
		// Finch's per-IP limit, scaled down: 2 requests, then a 3 s penalty.
		s.sim.SetIPRateLimit(finchsim.IPRateLimit{Enabled: true, Requests: 2, Window: time.Minute, Penalty: 3 * time.Second})
		for _, n := range []string{"a", "b", "c", "d", "e"} {
			s.newConn(n, n+"-1")
		}
		Eventually(func(g Gomega) {
			app := &finchv1.FinchApp{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s.app), app)).To(Succeed())
			cond := meta.FindStatusCondition(app.Status.Conditions, finchv1.ConditionRateLimited)
			g.Expect(cond).NotTo(BeNil())
			g.Expect(cond.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(cond.Reason).To(Equal(finchv1.ReasonIPRateLimited))
		}).Should(Succeed())
		s.sim.SetIPRateLimit(finchsim.IPRateLimit{}) // the penalty ends; Finch serves again
		for _, n := range []string{"a", "b", "c", "d", "e"} {
			s.waitPhase(n, finchv1.PhaseAwaitingConnect)
		}
		// Only requests already in flight when Finch answered finch_api_ip_rl
		// met it; each was retried once after the penalty, none knocked during it.
		rejected := s.sim.Responses(epSessions, 429)
		Expect(rejected).To(BeNumerically(">=", 1))
		Expect(rejected).To(BeNumerically("<=", 3))
		Expect(s.calls(epSessions)).To(Equal(5 + rejected))
		Eventually(func(g Gomega) {
			app := &finchv1.FinchApp{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s.app), app)).To(Succeed())
			g.Expect(meta.IsStatusConditionFalse(app.Status.Conditions, finchv1.ConditionRateLimited)).To(BeTrue())
		}).Should(Succeed())
	})
})
