package inbound_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/inbound"
)

// gatedClient is the manager's client whose FinchConnection patches (the
// webhook's records) wait until the test opens the gate, as they would
// behind a slow API server.
type gatedClient struct {
	client.Client
	entered chan string   // the name of each connection whose patch is waiting
	open    chan struct{} // closed: patches go through
	patches atomic.Int64
}

func newGatedClient(c client.Client) *gatedClient {
	return &gatedClient{Client: c, entered: make(chan string, 100), open: make(chan struct{})}
}

func (c *gatedClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if _, ok := obj.(*finchv1.FinchConnection); ok {
		c.entered <- obj.GetName()
		select {
		case <-c.open:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.patches.Add(1)
	}
	return c.Client.Patch(ctx, obj, patch, opts...)
}

// queueServer is an inbound server of its own whose webhook records go
// through gate.
func (f *fixture) queueServer(gate *gatedClient, mutate func(*inbound.Config)) (*inbound.Server, string) {
	f.t.Helper()
	cfg := inbound.Config{Client: gate, APIReader: f.e.mgr.GetAPIReader(), Apps: f.e.op.Apps}
	if mutate != nil {
		mutate(&cfg)
	}
	srv := inbound.New(cfg)
	ts := httptest.NewServer(srv.Handler())
	f.t.Cleanup(func() {
		// Open first: Close waits for the requests in flight.
		select {
		case <-gate.open:
		default:
			close(gate.open)
		}
		ts.Close()
	})
	return srv, ts.URL
}

// post delivers a signed webhook to the server at base and returns its answer.
func (f *fixture) post(base string, body []byte, eventID string) (int, string, http.Header) {
	f.t.Helper()
	r := f.signedWebhook(f.app, body, eventID, time.Now(), f.webhookSecret)
	r.URL, _ = url.Parse(apps.WebhookURL(base, types.NamespacedName{Namespace: f.ns, Name: f.app}))
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(r)
	if err != nil {
		f.t.Fatalf("POST webhook %s: %v (not answered before the write)", eventID, err)
	}
	defer resp.Body.Close()
	b := make([]byte, 256)
	n, _ := resp.Body.Read(b)
	return resp.StatusCode, string(b[:n]), resp.Header
}

func gauge(g interface{ Write(*dto.Metric) error }) float64 {
	m := &dto.Metric{}
	if err := g.Write(m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}

// A verified webhook is answered 200 as soon as it is queued, while the API
// server has not taken the write yet; the write then lands. A replay while it
// waits is a duplicate and causes no second write.
func TestWebhookAnsweredBeforeTheWrite(t *testing.T) {
	f := newFixture(t)
	g := f.g
	conn, _ := f.connectViaRedirect("acme", "acme")
	gate := newGatedClient(f.e.cached)
	_, base := f.queueServer(gate, nil)
	body := accountUpdated(conn.Status.ConnectionID, "connected")

	accepted := counter(inbound.WebhooksTotal, inbound.WebhookAccepted)
	status, resp, _ := f.post(base, body, "msg_fast")
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(resp).To(Equal(`{"status":"ok"}` + "\n"))
	g.Expect(counter(inbound.WebhooksTotal, inbound.WebhookAccepted)).To(Equal(accepted + 1))
	g.Eventually(gate.entered).Should(Receive(Equal("acme")), "a worker is writing the record")
	g.Expect(f.getConn("acme").Annotations[finchv1.WebhookEventAnnotation]).NotTo(Equal("msg_fast"), "answered before the write landed")

	dups := counter(inbound.WebhooksTotal, inbound.WebhookDuplicate)
	status, _, _ = f.post(base, body, "msg_fast")
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(counter(inbound.WebhooksTotal, inbound.WebhookDuplicate)).To(Equal(dups + 1))

	close(gate.open)
	g.Eventually(func(g Gomega) {
		g.Expect(f.connIn(g, "acme").Annotations).To(HaveKeyWithValue(finchv1.WebhookEventAnnotation, "msg_fast"))
	}).Should(Succeed())
	g.Consistently(gate.patches.Load).Should(BeEquivalentTo(1), "one write for the delivery and its replay")
}

// With the queue full, a delivery for another connection is answered 503
// with Retry-After (Finch retries it); one for a connection already waiting
// replaces its event (coalescing) and is accepted. The queue's depth is
// exported. Draining on shutdown writes what is queued, then refuses.
func TestWebhookQueueFull(t *testing.T) {
	f := newFixture(t)
	g := f.g
	ids := map[string]string{}
	for _, name := range []string{"a", "b", "c"} {
		conn, _ := f.connectViaRedirect(name, name)
		ids[name] = conn.Status.ConnectionID
	}
	gate := newGatedClient(f.e.cached)
	srv, base := f.queueServer(gate, func(c *inbound.Config) { c.WebhookQueueSize, c.WebhookWorkers = 1, 1 })

	status, _, _ := f.post(base, accountUpdated(ids["a"], "connected"), "msg_a")
	g.Expect(status).To(Equal(http.StatusOK))
	g.Eventually(gate.entered).Should(Receive(Equal("a")), "the one worker is busy with a")
	status, _, _ = f.post(base, accountUpdated(ids["b"], "connected"), "msg_b1")
	g.Expect(status).To(Equal(http.StatusOK), "b waits in the queue")
	g.Eventually(func() float64 { return gauge(inbound.WebhookQueueDepth) }).Should(Equal(2.0), "one being written, one waiting")

	full := counter(inbound.WebhooksTotal, inbound.WebhookQueueFull)
	status, resp, h := f.post(base, accountUpdated(ids["c"], "connected"), "msg_c")
	g.Expect(status).To(Equal(http.StatusServiceUnavailable))
	g.Expect(resp).To(Equal(`{"status":"busy"}` + "\n"))
	g.Expect(h.Get("Retry-After")).NotTo(BeEmpty())
	g.Expect(counter(inbound.WebhooksTotal, inbound.WebhookQueueFull)).To(Equal(full + 1))
	status, _, _ = f.post(base, accountUpdated(ids["b"], "reauth"), "msg_b2")
	g.Expect(status).To(Equal(http.StatusOK), "a newer event for b replaces the waiting one")

	close(gate.open)
	g.Eventually(func(g Gomega) {
		g.Expect(f.connIn(g, "a").Annotations).To(HaveKeyWithValue(finchv1.WebhookEventAnnotation, "msg_a"))
		g.Expect(f.connIn(g, "b").Annotations).To(HaveKeyWithValue(finchv1.WebhookEventAnnotation, "msg_b2"))
	}).Should(Succeed())
	g.Expect(gate.patches.Load()).To(BeEquivalentTo(2), "b's two events were written once")
	g.Expect(f.getConn("c").Annotations).NotTo(HaveKey(finchv1.WebhookEventAnnotation))

	// Finch retries c's event: there is room now.
	status, _, _ = f.post(base, accountUpdated(ids["c"], "connected"), "msg_c")
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(srv.DrainWebhooks(f.ctx)).To(Succeed())
	g.Expect(f.getConn("c").Annotations).To(HaveKeyWithValue(finchv1.WebhookEventAnnotation, "msg_c"), "written before the drain returned")
	g.Eventually(func() float64 { return gauge(inbound.WebhookQueueDepth) }).Should(BeZero())
	status, _, _ = f.post(base, accountUpdated(ids["a"], "connected"), "msg_after_shutdown")
	g.Expect(status).To(Equal(http.StatusServiceUnavailable), "shutting down: Finch retries elsewhere or later")
}
