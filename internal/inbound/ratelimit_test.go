package inbound_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// floodServer is an inbound server of its own with production-like limits
// (the shared one is unlimited: every test's browser is 127.0.0.1), behind a
// "proxy" at 127.0.0.1 whose X-Forwarded-For it trusts.
func (f *fixture) floodServer(exchanges int, mutate ...func(*inbound.Config)) (*inbound.Server, string) {
	f.t.Helper()
	cfg := inbound.Config{
		Client: f.e.mgr.GetClient(), APIReader: f.e.mgr.GetAPIReader(), Apps: f.e.op.Apps,
		Recorder:          f.e.mgr.GetEventRecorder(operator.EventSource),
		TrustedProxies:    []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		CallbackExchanges: budget.Config{Requests: exchanges, Window: time.Minute},
	}
	for _, m := range mutate {
		m(&cfg)
	}
	srv := inbound.New(cfg)
	ts := httptest.NewServer(srv.Handler())
	f.t.Cleanup(ts.Close)
	return srv, ts.URL
}

// getFrom is a GET as if from client address ip (through the trusted proxy).
func getFrom(t *testing.T, ip, u string) (int, string) {
	t.Helper()
	status, body, _ := getFromWithHeader(t, ip, u)
	return status, body
}

// getFromWithHeader is getFrom that also returns the response headers.
func getFromWithHeader(t *testing.T, ip, u string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", ip)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// Garbage codes for an app with no pending session cost no Finch call, and a
// burst from one address is answered 429 with Retry-After.
func TestCallbackGarbageWithoutSessionsCostsNothing(t *testing.T) {
	f := newFixture(t)
	g := f.g
	_, base := f.floodServer(inbound.DefaultCallbackExchanges.Requests)
	f.createApp("quiet", func(a *finchv1.FinchApp) { a.Spec.PublicURL = base })
	cb := f.callbackURL("quiet")
	limited := 0
	for i := range 30 {
		status, _ := getFrom(t, "203.0.113.10", fmt.Sprintf("%s?code=garbage-%d&state=x.y", cb, i))
		switch status {
		case http.StatusBadRequest:
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("request %d: status %d", i, status)
		}
	}
	g.Expect(f.sim.Calls("POST /auth/token")).To(BeZero())
	g.Expect(limited).To(Equal(30-inbound.DefaultCallbackIPBurst), "one address gets a burst, then 429")
	status, _, h := getFromWithHeader(t, "203.0.113.10", cb+"?code=x&state=y")
	g.Expect(status).To(Equal(http.StatusTooManyRequests))
	g.Expect(h.Get("Retry-After")).NotTo(BeEmpty())
}

// A flood of bogus callbacks while employers have live sessions: from one
// address and from 50, with made-up states and with a leaked real state. It
// costs at most the ceiling of Finch calls, never a 429 from Finch, and a
// real employer's callback in the middle of it still connects.
func TestCallbackFloodCostsAtMostTheCeiling(t *testing.T) {
	f := newFixture(t)
	g := f.g
	const ceiling = 5
	_, base := f.floodServer(ceiling)
	// Finch's documented token endpoint limit, enforced by the simulator.
	f.sim.SetRateLimit(f.clientID, finchsim.RateLimit{Requests: 20, Window: time.Minute})
	f.createApp("busy", func(a *finchv1.FinchApp) { a.Spec.PublicURL = base })
	cb := f.callbackURL("busy")
	conns := map[string]*finchv1.FinchConnection{}
	for _, name := range []string{"victim", "employer", "other-1", "other-2"} {
		f.newConnection(name, name, func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "busy"} })
	}
	for _, name := range []string{"victim", "employer", "other-1", "other-2"} {
		conns[name] = f.waitSession(name, finchv1.SessionConnect)
	}
	leaked := stateOf(conns["victim"].Status.Session.ConnectURL) // e.g. a forwarded link

	var wg sync.WaitGroup
	var answered, limited atomic.Int64
	flood := func(from func(i int) string, n int, state func(i int) string) {
		defer wg.Done()
		for i := range n {
			status, _ := getFrom(t, from(i), fmt.Sprintf("%s?code=%08d-0000-4000-8000-000000000000&state=%s", cb, i, url.QueryEscape(state(i))))
			answered.Add(1)
			if status == http.StatusTooManyRequests {
				limited.Add(1)
			}
		}
	}
	madeUp := func(i int) string { return fmt.Sprintf("sess-%d.%043d", i, i) }
	wg.Add(3)
	go flood(func(int) string { return "203.0.113.1" }, 500, madeUp)                                                        // one address
	go flood(func(i int) string { return fmt.Sprintf("198.51.100.%d", i%50+1) }, 400, madeUp)                               // 50 addresses
	go flood(func(i int) string { return fmt.Sprintf("198.51.100.%d", i%50+101) }, 100, func(int) string { return leaked }) // a leaked real state

	// The real employer finishes Connect in the middle of the flood.
	code, err := f.sim.CompleteSession(conns["employer"].Status.Session.ID, finchsim.Completion{})
	g.Expect(err).NotTo(HaveOccurred())
	start := time.Now()
	status, body := getFrom(t, "192.0.2.44", cb+"?code="+code+"&state="+url.QueryEscape(stateOf(conns["employer"].Status.Session.ConnectURL)))
	g.Expect(status).To(Equal(http.StatusOK), body)
	f.waitConnected("employer")
	latency := time.Since(start)
	wg.Wait()

	exchanges := f.sim.Calls("POST /auth/token")
	t.Logf("flood: %d bogus callbacks (%d answered 429), %d Finch token calls (ceiling %d), Finch 429s %d; real employer: callback to Connected in %s",
		answered.Load(), limited.Load(), exchanges, ceiling, f.sim.Responses("POST /auth/token", http.StatusTooManyRequests), latency.Round(time.Millisecond))
	g.Expect(answered.Load()).To(BeEquivalentTo(1000))
	g.Expect(exchanges).To(BeNumerically("<=", ceiling))
	g.Expect(exchanges).To(BeNumerically("<=", 1+inbound.MaxSessionExchanges), "the leaked state buys at most maxSessionExchanges exchanges")
	g.Expect(f.sim.Responses("POST /auth/token", http.StatusTooManyRequests)).To(BeZero())
	g.Expect(limited.Load()).To(BeNumerically(">", 0))
	g.Eventually(func(g Gomega) {
		g.Expect(f.events(g, "FinchApp", "busy", finchv1.ReasonCallbackFlood)).NotTo(BeEmpty())
	}).Should(Succeed())
	// The leaked session is slowed down, not locked: its own employer is
	// asked to retry in a minute (429 with Retry-After), never refused for good.
	vcode, err := f.sim.CompleteSession(conns["victim"].Status.Session.ID, finchsim.Completion{})
	g.Expect(err).NotTo(HaveOccurred())
	status, _, h := getFromWithHeader(t, "192.0.2.45", cb+"?code="+vcode+"&state="+url.QueryEscape(leaked))
	g.Expect(status).To(Equal(http.StatusTooManyRequests))
	g.Expect(h.Get("Retry-After")).NotTo(BeEmpty())
}

// --callback-require-state=false: a callback without state is exchanged with
// the app's callback URL and matched by customer_id, but only while the app
// has a session waiting; a state that is present must still be valid.
func TestCallbackStatelessMode(t *testing.T) {
	f := newFixture(t)
	g := f.g
	_, base := f.floodServer(inbound.DefaultCallbackExchanges.Requests, func(c *inbound.Config) { c.AllowStatelessCallbacks = true })
	f.createApp("lenient", func(a *finchv1.FinchApp) { a.Spec.PublicURL = base })
	cb := f.callbackURL("lenient")

	status, _ := getFrom(t, "203.0.113.20", cb+"?code=90abecb6-2b8e-4e45-a4c1-6b4f8e0d1a2c")
	g.Expect(status).To(Equal(http.StatusBadRequest), "no session is waiting: refused")
	g.Expect(f.sim.Calls("POST /auth/token")).To(BeZero())

	f.newConnection("plain", "plain", func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "lenient"} })
	conn := f.waitSession("plain", finchv1.SessionConnect)
	g.Eventually(func(g Gomega) {
		app := &finchv1.FinchApp{}
		g.Expect(f.e.cached.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "lenient"}, app)).To(Succeed())
		g.Expect(app.Status.Connections.AwaitingConnect).To(BeEquivalentTo(1))
	}).Should(Succeed())
	status, _ = getFrom(t, "203.0.113.20", cb+"?code=x&state=forged.state")
	g.Expect(status).To(Equal(http.StatusBadRequest), "a state that is present is checked")
	code, err := f.sim.CompleteSession(conn.Status.Session.ID, finchsim.Completion{})
	g.Expect(err).NotTo(HaveOccurred())
	status, body := getFrom(t, "203.0.113.20", cb+"?code="+code) // Connect dropped the state
	g.Expect(status).To(Equal(http.StatusOK), body)
	f.waitConnected("plain")
	g.Expect(f.sim.Calls("POST /auth/token")).To(Equal(1))
}
