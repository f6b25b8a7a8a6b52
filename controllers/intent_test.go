package controllers_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// For every step that calls Finch, the write after the call fails in one of
// two ways: it is lost and the manager goes on (an API server timeout or
// conflict), or the manager crashes right after the call and a new one
// starts with nothing in memory. The counts are the calls the simulator
// received; the employer side is the simulator's driver.
type writeFailure struct {
	name    string
	inject  func(s *scenario, endpoint string)
	recover func()
	crash   bool
}

var writeFailures = []writeFailure{
	{name: "the write after the call is lost", inject: (*scenario).lostWriteAfter, recover: func() {}},
	{name: "the manager crashes right after the call", inject: (*scenario).crashAfter, recover: restartAfterCrash, crash: true},
}

func reauthSessions(s *scenario) []finchsim.SessionInfo {
	var out []finchsim.SessionInfo
	for _, se := range s.sim.Sessions() {
		if se.Kind == "reauthenticate" {
			out = append(out, se)
		}
	}
	return out
}

var _ = Describe("Crash safety, for every step that calls Finch", func() {
	for _, wf := range writeFailures {
		Context(wf.name, func() {
			It("POST /connect/sessions: asked again, and Finch keeps one session, which the employer completes", func() {
				s := newScenario()
				wf.inject(s, epSessions)
				s.newConn("acme", "acme-001")
				wf.recover()
				c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
				// No intent needed: the same customer_id refreshes the same session.
				Expect(s.calls(epSessions)).To(Equal(2))
				Expect(s.sim.Sessions()).To(HaveLen(1))
				Expect(c.Status.Session.ID).To(Equal(s.sim.Sessions()[0].ID))
				s.handOverCode("acme", c.Status.Session.ID)
				s.waitPhase("acme", finchv1.PhaseConnected)
				Expect(s.sim.Connections()).To(HaveLen(1))
			})

			It("POST /auth/token: one exchange, the token is kept and the connection connects", func() {
				s := newScenario()
				s.newConn("acme", "acme-001")
				c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
				wf.inject(s, epToken)
				s.handOverCode("acme", c.Status.Session.ID)
				wf.recover()
				s.waitPhase("acme", finchv1.PhaseConnected)
				Expect(s.calls(epToken)).To(Equal(1))
				Expect(s.sim.Connections()).To(HaveLen(1))
			})

			It("GET /introspect: asked again, and nothing else", func() {
				s := newScenario()
				s.connect("acme", "acme-001")
				before := s.sim.CallCounts()
				wf.inject(s, epIntrospect)
				s.annotate("acme", finchv1.RequestedAtAnnotation, "check")
				wf.recover()
				Eventually(func() string { return s.get("acme").Status.LastHandledReconcileAt }).Should(Equal("check"))
				Expect(s.get("acme").Status.Phase).To(Equal(finchv1.PhaseConnected))
				s.quiet()
				after := s.sim.CallCounts()
				Expect(after[epIntrospect] - before[epIntrospect]).To(Equal(2))
				delete(after, epIntrospect)
				delete(before, epIntrospect)
				Expect(after).To(Equal(before))
			})

			It("GET /introspect then POST /connect/sessions/reauthenticate: exactly one reauthentication session, which the employer completes", func() {
				s := newScenario()
				c := s.connect("acme", "acme-001")
				id := c.Status.ConnectionID
				Expect(s.sim.SetConnectionStatus(id, "reauth")).To(Succeed())
				wf.inject(s, epReauth)
				s.annotate("acme", finchv1.RequestedAtAnnotation, "check")
				wf.recover()
				Eventually(func() []finchsim.SessionInfo { return reauthSessions(s) }).Should(HaveLen(1))
				first := reauthSessions(s)[0]
				if wf.crash {
					// The new manager cannot know the link: it waits for it
					// rather than replacing it, and says so.
					c = s.waitCondition("acme", finchv1.ConditionReady, metav1.ConditionFalse, finchv1.ReasonReauthUnrecorded)
					Expect(c.Status.Phase).To(Equal(finchv1.PhaseReauthRequired))
					Expect(c.Status.PendingCall).NotTo(BeNil())
					Expect(c.Status.PendingCall.ExpiresAt.Time).To(BeTemporally("~", first.ExpiresAt, 2*time.Second))
					msg := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady).Message
					Expect(msg).To(ContainSubstring(c.Status.PendingCall.ExpiresAt.UTC().Format(time.RFC3339)))
					Expect(msg).To(ContainSubstring(finchv1.ReauthRequestedAtAnnotation))
				} else {
					// The manager saw the session: it records it, without a second call.
					c = s.waitCondition("acme", finchv1.ConditionReady, metav1.ConditionTrue, finchv1.ReasonAwaitingEmployer)
					Expect(c.Status.Session.ID).To(Equal(first.ID))
					Expect(c.Status.PendingCall).To(BeNil())
				}
				s.quiet()
				Expect(s.calls(epReauth)).To(Equal(1))

				// The employer holding the first link completes it.
				s.handOverCode("acme", first.ID)
				c = s.waitPhase("acme", finchv1.PhaseConnected)
				Expect(c.Status.ConnectionID).To(Equal(id))
				Expect(c.Status.PendingCall).To(BeNil())
				Expect(c.Status.Session).To(BeNil())
				Expect(s.calls(epReauth)).To(Equal(1))
				Expect(s.sim.Connections()).To(HaveLen(1))
				Eventually(func() []string { return s.events("acme") }).Should(ContainElement(finchv1.ReasonReauthCompleted))
			})

			It("POST /disconnect: the connection is disconnected and the FinchConnection goes", func() {
				s := newScenario()
				c := s.connect("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.DeletionPolicy = finchv1.DeletionPolicyDisconnect })
				wf.inject(s, epDisconnect)
				Expect(k8sClient.Delete(ctx, s.get("acme"))).To(Succeed())
				wf.recover()
				Eventually(func() bool {
					return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: "acme"}, &finchv1.FinchConnection{}))
				}).Should(BeTrue())
				conn, _ := s.sim.Connection(c.Status.ConnectionID)
				Expect(conn.Disconnected).To(BeTrue())
				if wf.crash {
					// The new manager cannot know the answer and repeats the
					// call: harmless, the token is revoked and Finch answers 401.
					Expect(s.calls(epDisconnect)).To(Equal(2))
					Expect(s.sim.Responses(epDisconnect, http.StatusUnauthorized)).To(Equal(1))
				} else {
					Expect(s.calls(epDisconnect)).To(Equal(1))
				}
			})
		})
	}
})

var _ = Describe("Multi-entity connections", func() {
	It("stays Connected when one entity is disconnected (guide-shaped introspection), and re-authenticates for an entity in reauth", func() {
		s := newScenario()
		s.sim.AddApp(finchsim.AppConfig{ClientID: clientID, ClientSecret: clientSecret, OmitTopLevelStatus: true})
		const east, west = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		code, err := s.sim.CompleteSession(c.Status.Session.ID, finchsim.Completion{Entities: []finchsim.EntityInfo{
			{ID: east, Name: "Acme East"}, {ID: west, Name: "Acme West"}}})
		Expect(err).NotTo(HaveOccurred())
		s.createCodeSecret("acme", code)
		c = s.waitPhase("acme", finchv1.PhaseConnected)
		Expect(c.Status.Entities).To(HaveLen(2))

		// The app removes one entity, as POST /disconnect-entity does.
		token := string(s.tokenSecret("acme").Data[finchv1.AccessTokenKey])
		body, _ := json.Marshal(map[string]any{"entity_ids": []string{west}})
		req, _ := http.NewRequest(http.MethodPost, s.sim.URL()+"/disconnect-entity", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Finch-API-Version", "2020-09-17")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Body.Close()).To(Succeed())
		Expect(resp.StatusCode).To(Equal(http.StatusOK))

		s.annotate("acme", finchv1.RequestedAtAnnotation, "after-removal")
		Eventually(func() string { return s.get("acme").Status.LastHandledReconcileAt }).Should(Equal("after-removal"))
		c = s.waitPhase("acme", finchv1.PhaseConnected)
		Expect(meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionConnected)).To(BeTrue())
		Expect(meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionStalled)).To(BeFalse())
		Expect(c.Status.ConnectionStatus.Status).To(Equal("connected"))
		Expect(c.Status.Entities).To(ConsistOf(
			finchv1.EntityStatus{ID: east, Name: "Acme East", Status: "connected"},
			finchv1.EntityStatus{ID: west, Name: "Acme West", Status: "disconnected"},
		))
		Expect(s.calls(epReauth)).To(BeZero())

		// An entity in reauth still asks for a reauthentication session.
		Expect(s.sim.SetEntityStatus(c.Status.ConnectionID, east, "reauth")).To(Succeed())
		s.annotate("acme", finchv1.RequestedAtAnnotation, "entity-reauth")
		c = s.waitPhase("acme", finchv1.PhaseReauthRequired)
		Expect(c.Status.Session.Kind).To(Equal(finchv1.SessionReauthenticate))
		Expect(s.calls(epReauth)).To(Equal(1))
	})
})
