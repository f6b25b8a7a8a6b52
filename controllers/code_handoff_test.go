package controllers_test

import (
	"encoding/json"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// A code Secret is written by whoever may create Secrets in the namespace
// (docs/configuration.md's least privilege for a backend). It must never put another
// employer's connection, or none, in place of a connected one: the rule of
// the redirect callback (an open session, the token's customer_id) applies.
var _ = Describe("Embedded code hand-off: a code Secret cannot swap a connected employer's token", func() {
	embedded := func(c *finchv1.FinchConnection) { c.Spec.ConnectFlow = finchv1.ConnectFlowEmbedded }

	// otherCustomersCode is a code from another customer's session of the
	// same app, as the employer of that session (or its backend) holds it.
	otherCustomersCode := func(s *scenario) string {
		s.newConn("attacker", "attacker-cust", embedded)
		att := s.waitPhase("attacker", finchv1.PhaseAwaitingConnect)
		code, err := s.sim.CompleteSession(att.Status.Session.ID, finchsim.Completion{})
		Expect(err).NotTo(HaveOccurred())
		return code
	}
	codeSecrets := func(s *scenario, name string) int {
		list := &corev1.SecretList{}
		Expect(k8sClient.List(ctx, list, client.InNamespace(s.ns), client.MatchingLabels{finchv1.ConnectionLabel: name})).To(Succeed())
		n := 0
		for _, sec := range list.Items {
			if sec.Type == finchv1.CodeSecretType {
				n++
			}
		}
		return n
	}
	// noTokenIn checks that neither access token appears in the
	// connection's status or in the namespace's Events.
	noTokenIn := func(s *scenario, name string, tokens ...string) {
		raw, err := json.Marshal(s.get(name).Status)
		Expect(err).NotTo(HaveOccurred())
		evs := &corev1.EventList{}
		Expect(k8sClient.List(ctx, evs, client.InNamespace(s.ns))).To(Succeed())
		for _, e := range evs.Items {
			raw = append(raw, e.Message...)
		}
		for _, t := range tokens {
			Expect(t).NotTo(BeEmpty())
			Expect(string(raw)).NotTo(ContainSubstring(t))
		}
	}

	It("refuses a code Secret while the connection has no open session, without a POST /auth/token", func() {
		s := newScenario()
		victim := s.connect("embvictim", "embvictim-cust", embedded)
		Expect(victim.Status.Session).To(BeNil(), "a connected employer has no open session")
		before := s.tokenSecret("embvictim")
		code := otherCustomersCode(s)
		exchanges := s.calls(epToken)

		s.createCodeSecret("embvictim", code)
		c := s.waitCondition("embvictim", finchv1.ConditionReady, metav1.ConditionFalse, finchv1.ReasonCodeRejected)
		Expect(c.Status.CodeExchangeError).To(ContainSubstring("no open Connect or reauthentication session"))
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady).Message).To(ContainSubstring(finchv1.RequestedAtAnnotation))
		Eventually(func() int { return codeSecrets(s, "embvictim") }).Should(BeZero(), "the code Secret is deleted")
		Eventually(func() []string { return s.events("embvictim") }).Should(ContainElement(finchv1.ReasonCodeRejected))

		// The code was not spent, and nothing of the victim changed.
		Expect(s.calls(epToken)).To(Equal(exchanges), "no POST /auth/token for a code no open session can have produced")
		after := s.tokenSecret("embvictim")
		Expect(after.Data).To(Equal(before.Data))
		Expect(after.Annotations).To(Equal(before.Annotations))
		Expect(after.ResourceVersion).To(Equal(before.ResourceVersion))
		c = s.get("embvictim")
		Expect(c.Status.ConnectionID).To(Equal(victim.Status.ConnectionID))
		Expect(c.Status.Phase).To(Equal(finchv1.PhaseConnected))
		Expect(meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionConnected)).To(BeTrue())
		noTokenIn(s, "embvictim", string(before.Data[finchv1.AccessTokenKey]))

		// The code is still good for its own connection...
		s.createCodeSecret("attacker", code)
		s.waitPhase("attacker", finchv1.PhaseConnected)
		// ...and a resync acknowledges the refusal.
		s.annotate("embvictim", finchv1.RequestedAtAnnotation, "seen")
		s.waitCondition("embvictim", finchv1.ConditionReady, metav1.ConditionTrue, finchv1.ReasonConnected)
		Expect(s.get("embvictim").Status.CodeExchangeError).To(BeEmpty())
	})

	It("refuses another customer's code during an open session: the code is spent, the token is not stored", func() {
		s := newScenario()
		victim := s.connect("embvictim", "embvictim-cust", embedded)
		before := s.tokenSecret("embvictim")
		s.annotate("embvictim", finchv1.ReauthRequestedAtAnnotation, "1")
		reauth := s.waitPhase("embvictim", finchv1.PhaseReauthRequired).Status.Session
		Expect(reauth.Kind).To(Equal(finchv1.SessionReauthenticate))
		code := otherCustomersCode(s)
		exchanges := s.calls(epToken)

		s.createCodeSecret("embvictim", code)
		c := s.waitCondition("embvictim", finchv1.ConditionReady, metav1.ConditionFalse, finchv1.ReasonCodeRejected)
		Expect(c.Status.CodeExchangeError).To(ContainSubstring("another customer_id"))
		Expect(c.Status.CodeExchangeError).To(ContainSubstring("keeps its token and connection ID"))
		Expect(c.Status.CodeExchangeError).NotTo(ContainSubstring("attacker-cust"), "another customer's ID is not shown")
		Eventually(func() int { return codeSecrets(s, "embvictim") }).Should(BeZero(), "the code Secret is deleted")
		Eventually(func() []string { return s.events("embvictim") }).Should(ContainElement(finchv1.ReasonCodeRejected))
		Expect(s.calls(epToken)).To(Equal(exchanges+1), "the code was spent at Finch")

		after := s.tokenSecret("embvictim")
		Expect(after.Data).To(Equal(before.Data), "the other customer's token was not stored")
		Expect(after.Annotations).To(Equal(before.Annotations))
		Expect(after.ResourceVersion).To(Equal(before.ResourceVersion))
		c = s.get("embvictim")
		Expect(c.Status.ConnectionID).To(Equal(victim.Status.ConnectionID))
		Expect(c.Status.Phase).To(Equal(finchv1.PhaseReauthRequired))
		Expect(c.Status.Session).NotTo(BeNil())
		Expect(c.Status.Session.ID).To(Equal(reauth.ID), "the employer's own session is still open")
		Expect(s.sim.Connections()).To(HaveLen(2), "nothing was disconnected")
		noTokenIn(s, "embvictim", string(before.Data[finchv1.AccessTokenKey]))

		// The employer finishes their own reauthentication: that code goes
		// through, and the refusal no longer shows.
		s.handOverCode("embvictim", reauth.ID)
		c = s.waitCondition("embvictim", finchv1.ConditionReady, metav1.ConditionTrue, finchv1.ReasonConnected)
		Expect(c.Status.ConnectionID).To(Equal(victim.Status.ConnectionID))
		Expect(c.Status.CodeExchangeError).To(BeEmpty())
		Expect(s.tokenSecret("embvictim").Data[finchv1.AccessTokenKey]).NotTo(Equal(before.Data[finchv1.AccessTokenKey]))
	})
})
