package controllers_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/finch"
)

// One namespace's FinchApp must not pause Finch for everyone: a namespace
// that may edit its FinchApp can point spec.apiURL at a server of its own. The
// stub below stands in for it: it answers every request as Finch's per-IP
// penalty, with Retry-After of a day.
var _ = Describe("Finch API hosts: one namespace's apiURL cannot pause Finch for everyone", func() {
	// hostileStub answers 429 finch_api_ip_rl with Retry-After: 86400 and
	// counts what reaches it.
	hostileStub := func() (*httptest.Server, *atomic.Int32) {
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "86400")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"code":429,"name":"rate_limit_exceeded_error","finch_code":"finch_api_ip_rl","message":"internal service says hello"}`))
		}))
		// Open until the suite ends: the operator keeps the stub host's
		// penalty (up to an hour), and a later scenario's simulator that
		// got the same loopback port would inherit it.
		penalizedHosts = append(penalizedHosts, srv)
		return srv, &hits
	}
	// hostileApp is a FinchApp of the scenario's namespace, with valid
	// credentials, whose apiURL is apiURL.
	hostileApp := func(s *scenario, name, apiURL string) {
		app := &finchv1.FinchApp{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns},
			Spec:       finchv1.FinchAppSpec{APIURL: apiURL, CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "finch-credentials"}},
		}
		Expect(k8sClient.Create(ctx, app)).To(Succeed())
	}

	It("stalls an app whose apiURL host is not allowed, and sends nothing there", func() {
		s := newScenario()
		stub, hits := hostileStub()
		// localhost reaches the stub, but only 127.0.0.1 is allowed (--finch-api-hosts=127.0.0.1:*).
		u, err := url.Parse(stub.URL)
		Expect(err).NotTo(HaveOccurred())
		elsewhere := "http://localhost:" + u.Port()
		hostileApp(s, "elsewhere", elsewhere)
		s.newConn("acme", "acme-001", func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "elsewhere"} })

		var stalled *metav1.Condition
		Eventually(func(g Gomega) {
			app := &finchv1.FinchApp{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: "elsewhere"}, app)).To(Succeed())
			stalled = meta.FindStatusCondition(app.Status.Conditions, finchv1.ConditionStalled)
			g.Expect(stalled).NotTo(BeNil())
			g.Expect(stalled.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(stalled.Reason).To(Equal(finchv1.ReasonAPIHostNotAllowed))
			g.Expect(meta.IsStatusConditionFalse(app.Status.Conditions, finchv1.ConditionReady)).To(BeTrue())
		}).Should(Succeed())
		Expect(stalled.Message).To(ContainSubstring("localhost:" + u.Port()))
		Expect(stalled.Message).To(ContainSubstring("--finch-api-hosts"))

		// Its connection says why it waits, and makes no call.
		c := s.waitCondition("acme", finchv1.ConditionReady, metav1.ConditionFalse, finchv1.ReasonAppNotReady)
		msg := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady).Message
		Expect(msg).To(ContainSubstring("--finch-api-hosts"))
		Expect(msg).To(ContainSubstring("localhost:" + u.Port()))
		Consistently(hits.Load, 2*time.Second).Should(BeZero(), "no request reaches a host that is not allowed")
		Expect(s.sim.CallCounts()).To(BeEmpty())
	})

	It("keeps a 24h finch_api_ip_rl from another host to that host, capped at 60 minutes", func() {
		s := newScenario()
		stub, hits := hostileStub()
		hostileApp(s, "hostile", stub.URL) // 127.0.0.1 on another port: allowed, and not the simulator
		stubHost, simHost := hostKey(stub.URL), hostKey(s.app.Spec.APIURL)
		Expect(stubHost).NotTo(Equal(simHost))
		simBefore, _ := penaltyUntil(simHost)

		// The hostile app's connection calls the stub, which answers with a
		// day's penalty; the hostile app reports it.
		start := time.Now()
		s.newConn("bait", "bait-001", func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "hostile"} })
		Eventually(hits.Load).Should(BeNumerically(">=", 1))
		var rateLimited *metav1.Condition
		Eventually(func(g Gomega) {
			hostile := &finchv1.FinchApp{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: "hostile"}, hostile)).To(Succeed())
			rateLimited = meta.FindStatusCondition(hostile.Status.Conditions, finchv1.ConditionRateLimited)
			g.Expect(rateLimited).NotTo(BeNil())
			g.Expect(rateLimited.Status).To(Equal(metav1.ConditionTrue))
		}).Should(Succeed())

		// Meanwhile another app, on the simulator, gets its session at once.
		s.newConn("acme", "acme-001")
		c := s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(c.Status.Session).NotTo(BeNil())
		Expect(s.calls(epSessions)).To(Equal(1))
		app := &finchv1.FinchApp{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s.app), app)).To(Succeed())
		Expect(meta.IsStatusConditionTrue(app.Status.Conditions, finchv1.ConditionRateLimited)).To(BeFalse(),
			"the simulator's app is not rate-limited by another host's answer")
		Expect(fmt.Sprint(c.Status.Conditions)).NotTo(ContainSubstring("internal service says hello"))

		// The penalty is the stub host's alone, and at most Finch's 60 minutes.
		simAfter, _ := penaltyUntil(simHost)
		Expect(simAfter).To(Equal(simBefore), "finch_api_ip_penalty_until_timestamp_seconds of the simulator's host did not move")
		Expect(simAfter).To(BeZero())
		until, ok := penaltyUntil(stubHost)
		Expect(ok).To(BeTrue(), "finch_api_ip_penalty_until_timestamp_seconds{host=%q}", stubHost)
		Expect(until).To(BeNumerically(">", float64(start.Unix())))
		Expect(until).To(BeNumerically("<=", float64(time.Now().Add(budget.MaxIPPenalty+time.Second).Unix())),
			"the penalty is capped at Finch's documented 60 minutes, not the 24h asked for")
		Expect(rateLimited.Message).To(ContainSubstring(stubHost))
	})
})

// hostKey is the guard key (and metric label) of a base URL.
func hostKey(raw string) string {
	u, err := url.Parse(raw)
	Expect(err).NotTo(HaveOccurred())
	k, err := finch.HostKey(u)
	Expect(err).NotTo(HaveOccurred())
	return k
}

// penaltyUntil reads finch_api_ip_penalty_until_timestamp_seconds{host} from the
// operator's metrics registry (the manager runs in this process).
func penaltyUntil(host string) (float64, bool) {
	mfs, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, mf := range mfs {
		if mf.GetName() != "finch_api_ip_penalty_until_timestamp_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "host" && strings.EqualFold(l.GetValue(), host) {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}
