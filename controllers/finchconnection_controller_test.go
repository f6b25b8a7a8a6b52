package controllers_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/controllers"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/tokens"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

var _ = Describe("Connect session (steps 1-2)", func() {
	It("issues exactly one session and publishes it as Ready=True AwaitingEmployer", func() {
		s := newScenario()
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)

		Expect(s.calls(epSessions)).To(Equal(1))
		sess := c.Status.Session
		Expect(sess.Kind).To(Equal(finchv1.SessionConnect))
		simSess, ok := s.sim.Session(sess.ID)
		Expect(ok).To(BeTrue())
		Expect(simSess.CustomerID).To(Equal("acme-001"))
		Expect(simSess.RedirectURI).To(Equal("https://operator.example.com/callback"))
		Expect(sess.ConnectURL).To(ContainSubstring("session=" + sess.ID))
		Expect(sess.ExpiresAt.Sub(sess.IssuedAt.Time)).To(Equal(20160 * time.Minute))

		ready := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady)
		Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		Expect(ready.Reason).To(Equal(finchv1.ReasonAwaitingEmployer))
		Expect(meta.IsStatusConditionFalse(c.Status.Conditions, finchv1.ConditionConnected)).To(BeTrue())
		Expect(meta.IsStatusConditionFalse(c.Status.Conditions, finchv1.ConditionStalled)).To(BeTrue())
		Expect(meta.IsStatusConditionFalse(c.Status.Conditions, finchv1.ConditionReconciling)).To(BeTrue())
		Eventually(func() []string { return s.events("acme") }).Should(ContainElement(finchv1.ReasonSessionCreated))
		s.quiet()
	})

	It("makes no Finch call for metadata edits, and refreshes the same session when the spec changes", func() {
		s := newScenario()
		s.newConn("acme", "acme-001")
		first := s.waitPhase("acme", finchv1.PhaseAwaitingConnect).Status.Session

		// GitOps tools touch labels and annotations: no Finch call.
		c := s.get("acme")
		patch := client.MergeFrom(c.DeepCopy())
		c.Labels = map[string]string{"argocd.argoproj.io/instance": "payroll"}
		c.Annotations = map[string]string{"kustomize.toolkit.fluxcd.io/checksum": "abc"}
		Expect(k8sClient.Patch(ctx, c, patch)).To(Succeed())
		s.quiet()
		Expect(s.calls(epSessions)).To(Equal(1))

		// A spec field that does not go to Finch: no call either.
		s.update("acme", func(c *finchv1.FinchConnection) { c.Spec.DeletionPolicy = finchv1.DeletionPolicyDisconnect })
		s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		s.quiet()
		Expect(s.calls(epSessions)).To(Equal(1))

		// The employer's name changes before they connect: refresh, same session ID.
		s.update("acme", func(c *finchv1.FinchConnection) { c.Spec.CustomerName = "Acme Holdings" })
		Eventually(func() int { return s.calls(epSessions) }).Should(Equal(2))
		c = s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(c.Status.Session.ID).To(Equal(first.ID))
		simSess, _ := s.sim.Session(first.ID)
		Expect(simSess.CustomerName).To(Equal("Acme Holdings"))
		Expect(s.sim.Sessions()).To(HaveLen(1))
	})

	It("refreshes the session when its expiry approaches, keeping the session ID", func() {
		s := newScenario()
		s.newConn("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.MinutesToExpire = 600 })
		first := s.waitPhase("acme", finchv1.PhaseAwaitingConnect).Status.Session
		Expect(s.calls(epSessions)).To(Equal(1))

		// Nine hours and a half later the session is within its refresh margin
		// (a tenth of its lifetime); any pass now refreshes it.
		clockOffset.Store(int64(9*time.Hour + 30*time.Minute))
		DeferCleanup(func() { clockOffset.Store(0) })
		s.update("acme", func(c *finchv1.FinchConnection) {
			c.Spec.Suspend = false
			c.Spec.Manual = false
			c.Spec.DeletionPolicy = finchv1.DeletionPolicyDisconnect
		})
		Eventually(func() int { return s.calls(epSessions) }).Should(Equal(2))
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(c.Status.Session.ID).To(Equal(first.ID))
		Expect(c.Status.Session.ExpiresAt.Time).To(BeTemporally(">", first.ExpiresAt.Time))
		Eventually(func() []string { return s.events("acme") }).Should(ContainElement(finchv1.ReasonSessionRefreshed))
	})

	It("makes no Finch call when the manager restarts with nothing due", func() {
		s := newScenario()
		s.newConn("waiting", "c-1")
		s.connect("connected", "c-2")
		s.waitPhase("waiting", finchv1.PhaseAwaitingConnect)
		before := s.sim.CallCounts()

		stopManager()
		startManager()
		// Both objects are listed and reconciled again on start...
		Eventually(func(g Gomega) {
			g.Expect(s.get("waiting").Status.Phase).To(Equal(finchv1.PhaseAwaitingConnect))
			g.Expect(s.get("connected").Status.Phase).To(Equal(finchv1.PhaseConnected))
		}).Should(Succeed())
		// ...and nothing reaches Finch.
		Consistently(s.sim.CallCounts, 2*time.Second).Should(Equal(before))
	})
})

var _ = Describe("Token and introspection (steps 4-5)", func() {
	It("exchanges an embedded-flow code, stores the token and reaches Connected", func() {
		s := newScenario()
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		s.handOverCode("acme", c.Status.Session.ID)
		c = s.waitPhase("acme", finchv1.PhaseConnected)

		conns := s.sim.Connections()
		Expect(conns).To(HaveLen(1))
		Expect(c.Status.ConnectionID).To(Equal(conns[0].ID))
		Expect(c.Status.ProviderID).To(Equal(conns[0].ProviderID))
		Expect(c.Status.ConnectionStatus.Status).To(Equal("connected"))
		Expect(c.Status.AuthenticationMethods).NotTo(BeEmpty())
		Expect(c.Status.GrantedProducts).To(ContainElements("company", "directory"))
		Expect(c.Status.ConnectedAt).NotTo(BeNil())
		Expect(c.Status.Session).To(BeNil(), "a spent Connect link is not published")
		Expect(c.Status.TokenSecretRef.Name).To(Equal("acme-finch-token"))
		Expect(c.Finalizers).To(ContainElement(controllers.Finalizer))
		Expect(meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionConnected)).To(BeTrue())
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady).Reason).To(Equal(finchv1.ReasonConnected))

		tok := s.tokenSecret("acme")
		Expect(metav1.IsControlledBy(tok, c)).To(BeTrue())
		Expect(tok.Labels).To(HaveKeyWithValue(finchv1.ConnectionLabel, "acme"))
		Expect(tok.Data[finchv1.AccessTokenKey]).NotTo(BeEmpty())
		// The code Secret is consumed.
		Eventually(func() int {
			list := &corev1.SecretList{}
			Expect(k8sClient.List(ctx, list, client.InNamespace(s.ns), client.MatchingLabels{finchv1.ConnectionLabel: "acme"})).To(Succeed())
			return len(list.Items)
		}).Should(Equal(1))

		// Happy path: one session, one exchange, one introspection.
		Expect(s.sim.CallCounts()).To(Equal(map[string]int{epSessions: 1, epToken: 1, epIntrospect: 1}))
		s.quiet()

		// Status never carries the token.
		raw, err := json.Marshal(c)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(raw)).NotTo(ContainSubstring(string(tok.Data[finchv1.AccessTokenKey])))
	})

	It("costs few API writes on the happy path (measured)", func() {
		s := newScenario()
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		s.quiet()
		toAwaiting := writesIn(s.ns)
		// The budget claims are the Finch application's, in the cluster
		// resource namespace.
		var budgetCM string
		Eventually(func(g Gomega) {
			app := &finchv1.FinchApp{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s.app), app)).To(Succeed())
			g.Expect(app.Status.FinchApplication).NotTo(BeNil())
			budgetCM = app.Status.FinchApplication.BudgetConfigMap
		}).Should(Succeed())
		claimsToAwaiting := writesIn(configMapWrites(clusterResourceNamespace, budgetCM))
		s.handOverCode("acme", c.Status.Session.ID)
		s.waitPhase("acme", finchv1.PhaseConnected)
		s.quiet()
		total := writesIn(s.ns)
		claims := writesIn(configMapWrites(clusterResourceNamespace, budgetCM))
		GinkgoWriter.Printf("API writes to reach AwaitingConnect: %v, budget claims %v\nAPI writes through Connected: %v, budget claims %v\n", toAwaiting, claimsToAwaiting, total, claims)
		Expect(toAwaiting["status patch FinchConnection"]).To(Equal(1), "one status write per FinchConnection to reach AwaitingConnect")
		for kind := range toAwaiting {
			Expect([]string{"status patch FinchConnection", "status update FinchApp", "create Secret", "create Event", "patch Event"}).
				To(ContainElement(kind), "nothing but the connection's status, the app's counts, Events, and once per app its callback Secret")
		}
		Expect(toAwaiting["create Secret"]).To(Equal(1), "the app's callback Secret")
		Expect(claimsToAwaiting["create ConfigMap"]).To(Equal(1), "the Finch application's persisted budget claims")
		Expect(claimsToAwaiting["update ConfigMap"]).To(BeNumerically("<=", 1), "at most one claim renewal on a slow machine")
		// Events go through the manager's client too (events.Recorder): the
		// connection's SessionCreated and the app's Ready, and a repeat of the
		// latter (a status update conflict) is a series patch, not a new Event.
		Expect(toAwaiting["create Event"]).To(Equal(2))
		Expect(toAwaiting["patch Event"]).To(BeNumerically("<=", 1))
		// finalizer + token Secret + code Secret deletion + one status patch per pass.
		Expect(total["status patch FinchConnection"]).To(BeNumerically("<=", 3))
		Expect(total["patch FinchConnection"]).To(Equal(1))
		Expect(total["create Secret"]).To(Equal(2), "the callback Secret and the token Secret")
		// One budget claim per endpoint used (sessions, token, introspect);
		// a claim covers a quarter of the window's allowance.
		Expect(claims["create ConfigMap"] + claims["update ConfigMap"]).To(BeNumerically("<=", 3))
		Expect(total["delete Secret"]).To(Equal(1))
	})

	It("reports a rejected code clearly and removes the code Secret", func() {
		s := newScenario()
		s.newConn("acme", "acme-001")
		s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		s.createCodeSecret("acme", "not-a-real-code")
		c := s.waitCondition("acme", finchv1.ConditionReady, metav1.ConditionFalse, finchv1.ReasonCodeRejected)
		Expect(c.Status.CodeExchangeError).To(ContainSubstring("invalid_grant"))
		Expect(c.Status.Phase).To(Equal(finchv1.PhaseAwaitingConnect))
		Eventually(func() int {
			list := &corev1.SecretList{}
			Expect(k8sClient.List(ctx, list, client.InNamespace(s.ns), client.MatchingLabels{finchv1.ConnectionLabel: "acme"})).To(Succeed())
			return len(list.Items)
		}).Should(BeZero())
		Expect(s.calls(epToken)).To(Equal(1))
		Eventually(func() []string { return s.events("acme") }).Should(ContainElement(finchv1.ReasonCodeRejected))
	})

	It("maps Finch's connection statuses to phases", func() {
		s := newScenario()
		c := s.connect("acme", "acme-001")
		id := c.Status.ConnectionID

		Expect(s.sim.SetConnectionStatus(id, "pending")).To(Succeed())
		s.annotate("acme", finchv1.RequestedAtAnnotation, "1")
		c = s.waitPhase("acme", finchv1.PhaseConnecting)
		Expect(c.Status.LastHandledReconcileAt).To(Equal("1"))
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady).Reason).To(Equal(finchv1.ReasonConnectionPending))
		Expect(meta.IsStatusConditionFalse(c.Status.Conditions, finchv1.ConditionConnected)).To(BeTrue())

		Expect(s.sim.SetConnectionStatus(id, "error_permissions")).To(Succeed())
		s.annotate("acme", finchv1.RequestedAtAnnotation, "2")
		c = s.waitCondition("acme", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonEmployerAction)
		Expect(c.Status.Phase).To(Equal(finchv1.PhaseError))
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionStalled).Message).To(ContainSubstring("error_permissions"))

		Expect(s.sim.SetConnectionStatus(id, "connected")).To(Succeed())
		s.annotate("acme", finchv1.RequestedAtAnnotation, "3")
		s.waitCondition("acme", finchv1.ConditionStalled, metav1.ConditionFalse, finchv1.ReasonConnected)
		s.waitPhase("acme", finchv1.PhaseConnected)
		Expect(s.calls(epIntrospect)).To(Equal(4))
	})

	It("re-introspects when the interval elapses", func() {
		s := newScenario()
		s.connect("acme", "acme-001")
		Expect(s.calls(epIntrospect)).To(Equal(1))
		clockOffset.Store(int64(7 * time.Hour)) // past the default 6h interval
		DeferCleanup(func() { clockOffset.Store(0) })
		s.update("acme", func(c *finchv1.FinchConnection) { c.Spec.DeletionPolicy = finchv1.DeletionPolicyDisconnect })
		Eventually(func() int { return s.calls(epIntrospect) }).Should(Equal(2))
	})

	It("adopts a token Secret that predates the FinchConnection (migration) without a Connect session", func() {
		s := newScenario()
		token, connID := s.tokenFromElsewhere("legacy-001")
		s.createSecret("legacy-finch-token", map[string]string{"access_token": token})
		before := s.getSecret("legacy-finch-token").ResourceVersion

		s.newConn("legacy", "legacy-001")
		c := s.waitPhase("legacy", finchv1.PhaseConnected)
		Expect(c.Status.ConnectionID).To(Equal(connID))
		// Only the calls that produced the token elsewhere, plus one introspection.
		Expect(s.sim.CallCounts()).To(Equal(map[string]int{epSessions: 1, epToken: 1, epIntrospect: 1}))
		// Never overwritten, not even relabelled.
		Expect(s.getSecret("legacy-finch-token").ResourceVersion).To(Equal(before))
	})

	It("adopts a migrated token Secret put in place after the FinchConnection (no label, found by name)", func() {
		s := newScenario()
		s.newConn("late", "late-001")
		s.waitPhase("late", finchv1.PhaseAwaitingConnect)
		token, connID := s.tokenFromElsewhere("late-001")
		// An unlabelled Secret: only the operator's index of every Secret's
		// name sees it arrive, and that event brings the connection along.
		s.createSecret("late-finch-token", map[string]string{"access_token": token})
		c := s.waitPhase("late", finchv1.PhaseConnected)
		Expect(c.Status.ConnectionID).To(Equal(connID))
	})

	It("refuses to overwrite a Secret it does not own, before spending the code", func() {
		s := newScenario()
		s.createSecret("acme-finch-token", map[string]string{"something": "else"})
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		s.handOverCode("acme", c.Status.Session.ID)
		s.waitCondition("acme", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonTokenSecretNotOwned)
		Expect(s.calls(epToken)).To(BeZero())
		Expect(s.getSecret("acme-finch-token").Data).NotTo(HaveKey(finchv1.AccessTokenKey))
	})
})

var _ = Describe("Already connected (step 3)", func() {
	It("records the connection ID, stops calling Finch, and proceeds once the token is provided", func() {
		s := newScenario()
		first := s.connect("acme", "acme-001")
		token := string(s.tokenSecret("acme").Data[finchv1.AccessTokenKey])

		// A second app with the same credentials, for the same customer: Finch
		// says the connection already exists.
		other := &finchv1.FinchApp{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: s.ns}, Spec: *s.app.Spec.DeepCopy()}
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		s.newConn("acme-again", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "other"} })
		c := s.waitCondition("acme-again", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonConnectionExists)
		Expect(c.Status.ConnectionID).To(Equal(first.Status.ConnectionID))
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady).Message).To(ContainSubstring("acme-again-finch-token"))
		Expect(s.calls(epSessions)).To(Equal(2))
		s.quiet()

		s.createSecret("acme-again-finch-token", map[string]string{"access_token": token})
		c = s.waitPhase("acme-again", finchv1.PhaseConnected)
		Expect(c.Status.ConnectionID).To(Equal(first.Status.ConnectionID))
		Expect(s.calls(epSessions)).To(Equal(2))
		Expect(s.sim.Connections()).To(HaveLen(1))
	})
})

var _ = Describe("Reauthentication (step 6)", func() {
	It("mints one reauth session when Finch reports reauth, then returns to Connected with a new token and the same connection ID", func() {
		s := newScenario()
		c := s.connect("acme", "acme-001")
		id := c.Status.ConnectionID
		oldToken := string(s.tokenSecret("acme").Data[finchv1.AccessTokenKey])

		Expect(s.sim.SetConnectionStatus(id, "reauth")).To(Succeed())
		s.annotate("acme", finchv1.RequestedAtAnnotation, "check")
		c = s.waitPhase("acme", finchv1.PhaseReauthRequired)
		Expect(c.Status.Session.Kind).To(Equal(finchv1.SessionReauthenticate))
		Expect(meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionReauthRequired)).To(BeTrue())
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady).Reason).To(Equal(finchv1.ReasonAwaitingEmployer))
		Expect(s.calls(epReauth)).To(Equal(1))

		// Another check while the reauth session is live mints nothing.
		s.annotate("acme", finchv1.RequestedAtAnnotation, "check-again")
		Eventually(func() string { return s.get("acme").Status.LastHandledReconcileAt }).Should(Equal("check-again"))
		s.quiet()
		Expect(s.calls(epReauth)).To(Equal(1))

		s.handOverCode("acme", c.Status.Session.ID)
		c = s.waitPhase("acme", finchv1.PhaseConnected)
		Expect(c.Status.ConnectionID).To(Equal(id))
		Expect(c.Status.Session).To(BeNil())
		Expect(string(s.tokenSecret("acme").Data[finchv1.AccessTokenKey])).NotTo(Equal(oldToken))
		Expect(s.calls(epReauth)).To(Equal(1))
		Expect(s.sim.Connections()).To(HaveLen(1))
		Eventually(func() []string { return s.events("acme") }).Should(ContainElement(finchv1.ReasonReauthCompleted))
	})

	It("mints a reauth session on request and keeps it published until used", func() {
		s := newScenario()
		s.connect("acme", "acme-001")
		s.annotate("acme", finchv1.ReauthRequestedAtAnnotation, "now")
		c := s.waitPhase("acme", finchv1.PhaseReauthRequired)
		Expect(c.Status.LastHandledReauthAt).To(Equal("now"))
		Expect(s.calls(epReauth)).To(Equal(1))
		// Finch still says connected, but the requested session stays until used.
		s.annotate("acme", finchv1.RequestedAtAnnotation, "1")
		Eventually(func() string { return s.get("acme").Status.LastHandledReconcileAt }).Should(Equal("1"))
		Expect(s.get("acme").Status.Phase).To(Equal(finchv1.PhaseReauthRequired))
		Expect(s.calls(epReauth)).To(Equal(1))
	})

	It("reacts to a webhook annotation with status reauth without introspecting", func() {
		s := newScenario()
		c := s.connect("acme", "acme-001")
		Expect(s.sim.SetConnectionStatus(c.Status.ConnectionID, "reauth")).To(Succeed())
		introspections := s.calls(epIntrospect)
		Expect(tokens.RecordWebhook(ctx, k8sClient, c, "msg_1", "reauth")).To(Succeed())
		c = s.waitPhase("acme", finchv1.PhaseReauthRequired)
		Expect(c.Status.LastHandledWebhookEvent).To(Equal("msg_1"))
		Expect(s.calls(epReauth)).To(Equal(1))
		Expect(s.calls(epIntrospect)).To(Equal(introspections))
	})
})

var _ = Describe("Deletion (step 7)", func() {
	It("disconnects at Finch with deletionPolicy Disconnect", func() {
		s := newScenario()
		c := s.connect("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.DeletionPolicy = finchv1.DeletionPolicyDisconnect })
		s.deleteAndWait("acme")
		Expect(s.calls(epDisconnect)).To(Equal(1))
		conn, _ := s.sim.Connection(c.Status.ConnectionID)
		Expect(conn.Disconnected).To(BeTrue())
	})

	It("retains the connection and its token with deletionPolicy Retain, so a re-created object adopts it", func() {
		s := newScenario()
		c := s.connect("acme", "acme-001")
		s.deleteAndWait("acme")
		Expect(s.calls(epDisconnect)).To(BeZero())
		tok := s.tokenSecret("acme")
		Expect(tok.OwnerReferences).To(BeEmpty())

		sessions := s.calls(epSessions)
		s.newConn("acme", "acme-001")
		again := s.waitPhase("acme", finchv1.PhaseConnected)
		Expect(again.Status.ConnectionID).To(Equal(c.Status.ConnectionID))
		Expect(s.calls(epSessions)).To(Equal(sessions))
	})

	It("does not hang forever when Finch is unreachable: Stalled with instructions, then lets go when Finch recovers", func() {
		s := newScenario()
		s.connect("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.DeletionPolicy = finchv1.DeletionPolicyDisconnect })
		s.sim.InjectFault(epDisconnect, finchsim.Fault{Count: -1, Status: 503})
		Expect(k8sClient.Delete(ctx, s.get("acme"))).To(Succeed())
		c := s.waitCondition("acme", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonDisconnectFailed)
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionStalled).Message).To(ContainSubstring(`"finalizers":null`))
		s.sim.ClearFaults()
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: "acme"}, &finchv1.FinchConnection{})
		}, time.Minute).Should(Satisfy(func(err error) bool { return err != nil && strings.Contains(err.Error(), "not found") }))
		conn := s.sim.Connections()[0]
		Expect(conn.Disconnected).To(BeTrue())
	})
})

var _ = Describe("Duplicates, suspend and requests", func() {
	It("stalls the newer of two connections with the same customerID and lets it proceed when the older goes", func() {
		s := newScenario()
		s.newConn("first", "acme-001")
		s.waitPhase("first", finchv1.PhaseAwaitingConnect)
		s.newConn("second", "acme-001")
		c := s.waitCondition("second", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonDuplicateCustomerID)
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionStalled).Message).To(ContainSubstring(`"first"`))
		s.quiet()
		Expect(s.calls(epSessions)).To(Equal(1))

		s.deleteAndWait("first")
		c = s.waitPhase("second", finchv1.PhaseAwaitingConnect)
		Expect(s.calls(epSessions)).To(Equal(2))
		Expect(s.sim.Sessions()).To(HaveLen(1), "same customer_id, same staged session")
		Expect(c.Status.Session.ID).To(Equal(s.sim.Sessions()[0].ID))
	})

	It("makes no Finch call while suspended", func() {
		s := newScenario()
		s.newConn("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.Suspend = true })
		s.waitCondition("acme", finchv1.ConditionReconciling, metav1.ConditionFalse, finchv1.ReasonSuspended)
		s.quiet()
		Expect(s.calls(epSessions)).To(BeZero())
		s.update("acme", func(c *finchv1.FinchConnection) { c.Spec.Suspend = false })
		s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(s.calls(epSessions)).To(Equal(1))
	})
})

var _ = Describe("Errors", func() {
	It("stalls on a Finch 4xx with Finch's message and does not retry until the spec changes", func() {
		s := newScenario()
		s.sim.InjectFault(epSessions, finchsim.Fault{Count: 1, Status: 400})
		s.newConn("acme", "acme-001")
		c := s.waitCondition("acme", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonFinchRejected)
		Expect(c.Status.Phase).To(Equal(finchv1.PhaseError))
		Expect(c.Status.ObservedGeneration).To(Equal(c.Generation))
		s.quiet()
		Expect(s.calls(epSessions)).To(Equal(1))
		Eventually(func() []string { return s.events("acme") }).Should(ContainElement(finchv1.ReasonFinchRejected))

		s.update("acme", func(c *finchv1.FinchConnection) { c.Spec.CustomerName = "Acme fixed" })
		s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(s.calls(epSessions)).To(Equal(2))
	})

	It("retries 5xx with a persisted backoff and converges", func() {
		s := newScenario()
		// The client retries 3 times per pass; fail two passes.
		s.sim.InjectFault(epSessions, finchsim.Fault{Count: 6, Status: 503})
		s.newConn("acme", "acme-001")
		Eventually(func() int32 {
			if r := s.get("acme").Status.Retry; r != nil {
				return r.Failures
			}
			return 0
		}).Should(BeNumerically(">=", 1))
		c := s.get("acme")
		Expect(c.Status.Retry.Reason).To(Equal(finchv1.ReasonFinchUnavailable))
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionStalled)).To(BeNil(), "a transient failure is not Stalled")
		c = s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(c.Status.Retry).To(BeNil())
		Expect(s.sim.Sessions()).To(HaveLen(1))
	})

	It("honours a long Retry-After on 429 without flipping to Stalled", func() {
		s := newScenario()
		s.sim.InjectFault(epSessions, finchsim.Fault{Count: 1, Status: 429, RetryAfter: time.Hour})
		s.newConn("acme", "acme-001")
		Eventually(func() string {
			if r := s.get("acme").Status.Retry; r != nil {
				return r.Reason
			}
			return ""
		}).Should(Equal(finchv1.ReasonRateLimited))
		c := s.get("acme")
		Expect(c.Status.Retry.NextAttemptTime.Time).To(BeTemporally(">", time.Now().Add(50*time.Minute)))
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionStalled)).To(BeNil())
		s.quiet()
		Expect(s.calls(epSessions)).To(Equal(1))
		// A manual request skips the backoff.
		s.annotate("acme", finchv1.RequestedAtAnnotation, "now")
		s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
	})

	It("waits for a missing FinchApp and its Secret, and proceeds when they appear (watched, not polled)", func() {
		s := newScenario()
		s.newConn("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "later"} })
		c := s.waitCondition("acme", finchv1.ConditionReady, metav1.ConditionFalse, finchv1.ReasonAppNotFound)
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady).Message).To(ContainSubstring(`FinchApp "later" not found`))

		app := &finchv1.FinchApp{ObjectMeta: metav1.ObjectMeta{Name: "later", Namespace: s.ns}, Spec: *s.app.Spec.DeepCopy()}
		app.Spec.CredentialsSecretRef.Name = "later-credentials"
		Expect(k8sClient.Create(ctx, app)).To(Succeed())
		c = s.waitCondition("acme", finchv1.ConditionReady, metav1.ConditionFalse, finchv1.ReasonAppNotReady)
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady).Message).To(ContainSubstring("later-credentials"))

		s.createSecret("later-credentials", map[string]string{"client_id": clientID, "client_secret": clientSecret})
		s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(s.calls(epSessions)).To(Equal(1))
	})

	It("applied just before its FinchApp (a GitOps sync), proceeds without an AppNotFound warning or extra writes", func() {
		s := newScenario()
		s.newConn("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "together"} })
		Consistently(func() finchv1.Phase { return s.get("acme").Status.Phase }, 500*time.Millisecond).Should(BeEmpty(),
			"a connection waiting for its app within the grace period writes no status")
		app := &finchv1.FinchApp{ObjectMeta: metav1.ObjectMeta{Name: "together", Namespace: s.ns}, Spec: *s.app.Spec.DeepCopy()}
		Expect(k8sClient.Create(ctx, app)).To(Succeed())
		s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		s.quiet()
		Expect(s.events("acme")).NotTo(ContainElement(finchv1.ReasonAppNotFound))
		Expect(writesIn(s.ns)["status patch FinchConnection"]).To(Equal(1), "one status write to reach AwaitingConnect")
		Expect(s.calls(epSessions)).To(Equal(1))
	})

	It("stalls on invalid credentials, stops calling Finch, and recovers when the Secret is fixed", func() {
		s := newScenario()
		s.createSecret("bad-credentials", map[string]string{"client_id": clientID, "client_secret": "wrong"})
		bad := &finchv1.FinchApp{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: s.ns}, Spec: *s.app.Spec.DeepCopy()}
		bad.Spec.CredentialsSecretRef.Name = "bad-credentials"
		Expect(k8sClient.Create(ctx, bad)).To(Succeed())
		useBad := func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "bad"} }
		s.newConn("a", "a-1", useBad)
		s.waitCondition("a", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonInvalidCredentials)
		s.newConn("b", "b-1", useBad)
		s.waitCondition("b", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonInvalidCredentials)
		Expect(s.calls(epSessions)).To(Equal(1), "one rejection is enough for the whole app")
		Eventually(func(g Gomega) {
			app := &finchv1.FinchApp{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(bad), app)).To(Succeed())
			g.Expect(meta.FindStatusCondition(app.Status.Conditions, finchv1.ConditionReady).Reason).To(Equal(finchv1.ReasonInvalidCredentials))
		}).Should(Succeed())

		sec := s.getSecret("bad-credentials")
		sec.Data["client_secret"] = []byte(clientSecret)
		Expect(k8sClient.Update(ctx, sec)).To(Succeed())
		s.waitPhase("a", finchv1.PhaseAwaitingConnect)
		s.waitPhase("b", finchv1.PhaseAwaitingConnect)
	})
})

var _ = Describe("Finch budget", func() {
	It("spends at most the app's budget and defers the rest without blocking or 429s", func() {
		s := newScenario()
		s.setAppBudget(2, time.Hour)
		for _, n := range []string{"a", "b", "c", "d"} {
			s.newConn(n, n+"-1")
		}
		Eventually(func() int {
			waiting := 0
			for _, n := range []string{"a", "b", "c", "d"} {
				c := s.get(n)
				if r := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady); r != nil && r.Reason == finchv1.ReasonBudgetWait {
					waiting++
				}
			}
			return waiting
		}).Should(Equal(2))
		s.quiet()
		Expect(s.calls(epSessions)).To(Equal(2))
		Expect(s.sim.Responses(epSessions, 429)).To(BeZero())
	})

	It("gives a backlog places in line, one per slot as slots free, while an employer's hand-off goes first", func() {
		s := newScenario()
		s.setAppBudget(2, time.Hour)
		s.newConn("first", "first-1")
		first := s.waitPhase("first", finchv1.PhaseAwaitingConnect)
		s.newConn("second", "second-1")
		s.waitPhase("second", finchv1.PhaseAwaitingConnect)
		backlog := []string{"w1", "w2", "w3", "w4"}
		for _, n := range backlog {
			s.newConn(n, n+"-1")
		}
		// Each waiter is told when it comes back: its own place, when a slot
		// not promised to an earlier waiter frees (an hour after the call that
		// holds it), so never more waiters in a window than it has slots.
		nextRE := regexp.MustCompile(`next attempt in about (\S+)$`)
		var waits []time.Duration
		Eventually(func(g Gomega) {
			waits = waits[:0]
			for _, n := range backlog {
				r := meta.FindStatusCondition(s.get(n).Status.Conditions, finchv1.ConditionReady)
				g.Expect(r).NotTo(BeNil())
				g.Expect(r.Reason).To(Equal(finchv1.ReasonBudgetWait))
				m := nextRE.FindStringSubmatch(r.Message)
				g.Expect(m).NotTo(BeNil(), r.Message)
				d, err := time.ParseDuration(m[1])
				g.Expect(err).NotTo(HaveOccurred())
				waits = append(waits, d)
			}
		}).Should(Succeed())
		slices.Sort(waits)
		Expect(waits[0]).To(BeNumerically(">=", 55*time.Minute), "no place before the first slot frees: %v", waits)
		for i := 2; i < len(waits); i++ {
			Expect(waits[i]-waits[i-2]).To(BeNumerically(">=", 55*time.Minute), "at most 2 places (the budget) per hour: %v", waits)
		}
		// The employer of the first connection finishes Connect meanwhile.
		s.handOverCode("first", first.Status.Session.ID)
		s.waitPhase("first", finchv1.PhaseConnected)
		s.quiet()
		Expect(s.calls(epSessions)).To(Equal(2), "the backlog spent nothing beyond the budget")
		Expect(s.sim.Responses(epSessions, 429)).To(BeZero())
	})
})

var _ = Describe("Crash safety", func() {
	It("converges with one session when the status write after the session call is lost", func() {
		s := newScenario()
		s.failNextStatusPatches(1)
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(failStatusPatches.Load()).To(BeZero(), "the failure was injected")
		Expect(s.calls(epSessions)).To(Equal(2), "the lost result is asked for again")
		Expect(s.sim.Sessions()).To(HaveLen(1), "Finch refreshed the same session")
		Expect(c.Status.Session.ID).To(Equal(s.sim.Sessions()[0].ID))
	})

	It("converges when Finch commits the session but the response is lost", func() {
		s := newScenario()
		s.sim.InjectFault(epSessions, finchsim.Fault{Count: 1, CommitThenDrop: true})
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(s.sim.Sessions()).To(HaveLen(1))
		Expect(c.Status.Session.ID).To(Equal(s.sim.Sessions()[0].ID))
	})

	It("mints exactly one reauth session when the write of its intent is lost", func() {
		// The status write before the call (the reauthentication intent)
		// fails: no call is made until it is written. The write after the
		// call is covered in intent_test.go.
		s := newScenario()
		c := s.connect("acme", "acme-001")
		Expect(s.sim.SetConnectionStatus(c.Status.ConnectionID, "reauth")).To(Succeed())
		s.failNextStatusPatches(1)
		s.annotate("acme", finchv1.RequestedAtAnnotation, "check")
		c = s.waitPhase("acme", finchv1.PhaseReauthRequired)
		Expect(failStatusPatches.Load()).To(BeZero(), "the failure was injected")
		s.quiet()
		Expect(s.calls(epReauth)).To(Equal(1))
		Expect(c.Status.Session.ID).To(Equal(s.sim.Sessions()[len(s.sim.Sessions())-1].ID))
		s.handOverCode("acme", c.Status.Session.ID)
		s.waitPhase("acme", finchv1.PhaseConnected)
		Expect(s.sim.Connections()).To(HaveLen(1))
	})

	It("does not lose a token when the status write after the code exchange is lost", func() {
		s := newScenario()
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		s.failNextStatusPatches(1)
		s.handOverCode("acme", c.Status.Session.ID)
		s.waitPhase("acme", finchv1.PhaseConnected)
		Expect(s.calls(epToken)).To(Equal(1))
		Expect(s.sim.Connections()).To(HaveLen(1))
	})
})

var _ = Describe("FinchApp", func() {
	It("reports Ready, its public URLs and its connections by phase", func() {
		s := newScenario()
		app := &finchv1.FinchApp{}
		Eventually(func() error {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s.app), app)).To(Succeed())
			app.Spec.PublicURL = "https://finch.example.com/"
			return k8sClient.Update(ctx, app)
		}).Should(Succeed())
		s.connect("a", "a-1")
		s.newConn("b", "b-1")
		s.waitPhase("b", finchv1.PhaseAwaitingConnect)
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s.app), app)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(app.Status.Conditions, finchv1.ConditionReady)).To(BeTrue())
			g.Expect(app.Status.ObservedGeneration).To(Equal(app.Generation))
			g.Expect(app.Status.CallbackURL).To(MatchRegexp(`^https://finch\.example\.com/callback/` + s.ns + `/default/[A-Za-z0-9_-]{24}$`))
			g.Expect(app.Status.CallbackSecretName).To(Equal("default-finch-callback"))
			g.Expect(app.Status.WebhookURL).To(Equal("https://finch.example.com/webhooks/" + s.ns + "/default"))
			g.Expect(app.Status.Connections).To(Equal(finchv1.ConnectionCounts{Total: 2, Connected: 1, AwaitingConnect: 1}))
			g.Expect(meta.IsStatusConditionFalse(app.Status.Conditions, finchv1.ConditionRateLimited)).To(BeTrue(),
				"RateLimited is False, not absent (the Rate Limited column of kubectl get fapp -o wide)")
		}).Should(Succeed())
	})

	It("names the missing Secret key", func() {
		s := newScenario()
		sec := s.getSecret("finch-credentials")
		delete(sec.Data, "client_id")
		Expect(k8sClient.Update(ctx, sec)).To(Succeed())
		Eventually(func(g Gomega) {
			app := &finchv1.FinchApp{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s.app), app)).To(Succeed())
			ready := meta.FindStatusCondition(app.Status.Conditions, finchv1.ConditionReady)
			g.Expect(ready).NotTo(BeNil())
			g.Expect(ready.Reason).To(Equal("CredentialsKeyMissing"))
			g.Expect(ready.Message).To(ContainSubstring(`no key "client_id"`))
		}).Should(Succeed())
	})
})

func (s *scenario) getSecret(name string) *corev1.Secret {
	sec := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, sec)).To(Succeed())
	return sec
}

// tokenFromElsewhere connects a customer outside the operator (the way an
// application did before adopting it) and returns the token and connection ID.
func (s *scenario) tokenFromElsewhere(customer string) (string, string) {
	fc, err := finch.New(finch.Config{BaseURL: s.sim.URL(), ClientID: clientID, ClientSecret: clientSecret})
	Expect(err).NotTo(HaveOccurred())
	// The products newConn asks for: a token granting fewer would (rightly)
	// make the operator ask the employer for the rest (ProductsChanged).
	sess, err := fc.CreateSession(ctx, finch.SessionRequest{CustomerID: customer, CustomerName: customer, Products: []string{"company", "directory"}})
	Expect(err).NotTo(HaveOccurred())
	code, err := s.sim.CompleteSession(sess.SessionID, finchsim.Completion{})
	Expect(err).NotTo(HaveOccurred())
	tok, err := fc.ExchangeCode(ctx, finch.TokenRequest{Code: code})
	Expect(err).NotTo(HaveOccurred())
	return tok.AccessToken, tok.ConnectionID
}
