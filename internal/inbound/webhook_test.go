package inbound_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/inbound"
)

// Forged, stale, oversized and otherwise bad deliveries are rejected, record
// nothing and cause no Finch call.
func TestWebhookRejected(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.createApp("nohook", nil) // no webhookSecretRef
	conn, _ := f.connectViaRedirect("acme", "acme")
	connID := conn.Status.ConnectionID
	before := f.quiet()
	body := accountUpdated(connID, "reauth") // would cost a reauth session if accepted
	now := time.Now()

	otherKey := make([]byte, 32)
	_, _ = rand.Read(otherKey)
	otherSecret := base64.StdEncoding.EncodeToString(otherKey)
	valid := func() *http.Request { return f.signedWebhook(f.app, body, "msg_"+randHex(8), now, f.webhookSecret) }

	cases := []struct {
		name   string
		req    func() *http.Request
		status int
	}{
		{"forged (other secret)", func() *http.Request { return f.signedWebhook(f.app, body, "msg_forged", now, otherSecret) }, 401},
		{"stale (301 s old)", func() *http.Request {
			return f.signedWebhook(f.app, body, "msg_stale", now.Add(-301*time.Second), f.webhookSecret)
		}, 401},
		{"from the future (301 s ahead)", func() *http.Request {
			return f.signedWebhook(f.app, body, "msg_future", now.Add(301*time.Second), f.webhookSecret)
		}, 401},
		{"body altered after signing", func() *http.Request {
			r := valid()
			altered := accountUpdated(connID, "disconnected")
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(altered)), int64(len(altered))
			return r
		}, 401},
		{"event id altered after signing", func() *http.Request {
			r := valid()
			r.Header.Set(finch.HeaderEventID, "msg_other")
			return r
		}, 401},
		{"several signatures, none matching", func() *http.Request {
			r := valid()
			good := strings.TrimPrefix(r.Header.Get(finch.HeaderSignature), "v1,")
			r.Header.Set(finch.HeaderSignature, "v1,AAAA v1,"+base64.StdEncoding.EncodeToString([]byte("nope"))+" v2,"+good)
			return r
		}, 401},
		{"missing signature", func() *http.Request {
			r := valid()
			r.Header.Del(finch.HeaderSignature)
			return r
		}, 401},
		{"missing timestamp", func() *http.Request {
			r := valid()
			r.Header.Del(finch.HeaderTimestamp)
			return r
		}, 401},
		{"unknown app, correctly signed", func() *http.Request {
			r := f.signedWebhook("nope", body, "msg_unknown_app", now, f.webhookSecret)
			return r
		}, 401},
		{"unknown namespace", func() *http.Request {
			r := valid()
			r.URL.Path = "/webhooks/no-such-ns/default"
			return r
		}, 401},
		{"app without webhook secret", func() *http.Request {
			return f.signedWebhook("nohook", body, "msg_nohook", now, f.webhookSecret)
		}, 401},
		{"oversized with Content-Length", func() *http.Request {
			big := append(accountUpdated(connID, "reauth"), bytes.Repeat([]byte(" "), inbound.DefaultMaxBodyBytes)...)
			return f.signedWebhook(f.app, big, "msg_big", now, f.webhookSecret)
		}, 413},
		{"oversized, chunked", func() *http.Request {
			big := append(accountUpdated(connID, "reauth"), bytes.Repeat([]byte(" "), inbound.DefaultMaxBodyBytes)...)
			r := f.signedWebhook(f.app, big, "msg_big_chunked", now, f.webhookSecret)
			r.Body, r.ContentLength = io.NopCloser(io.MultiReader(bytes.NewReader(big))), -1
			return r
		}, 413},
	}
	// Unauthorized deliveries are counted on the app they name once it
	// exists (so the alert names it), on no app otherwise: made-up paths never
	// become label values.
	appLabel, nohookLabel := "FinchApp/"+f.app, "FinchApp/nohook"
	unauthApp := counterFor(inbound.WebhooksTotal, f.ns, appLabel, inbound.WebhookUnauthorized)
	unauthNohook := counterFor(inbound.WebhooksTotal, f.ns, nohookLabel, inbound.WebhookUnauthorized)
	unauthNone := counterFor(inbound.WebhooksTotal, "", "", inbound.WebhookUnauthorized)
	unauthorized := ""
	for _, tc := range cases {
		status, respBody := do(t, tc.req())
		g.Expect(status).To(Equal(tc.status), tc.name)
		if status == 401 {
			if unauthorized == "" {
				unauthorized = respBody
			}
			g.Expect(respBody).To(Equal(unauthorized), "every 401 looks the same: %s", tc.name)
		}
	}
	g.Expect(unauthorized).To(Equal(`{"status":"unauthorized"}` + "\n"))
	g.Expect(counterFor(inbound.WebhooksTotal, f.ns, appLabel, inbound.WebhookUnauthorized)).To(Equal(unauthApp + 8))
	g.Expect(counterFor(inbound.WebhooksTotal, f.ns, nohookLabel, inbound.WebhookUnauthorized)).To(Equal(unauthNohook + 1))
	g.Expect(counterFor(inbound.WebhooksTotal, "", "", inbound.WebhookUnauthorized)).To(BeNumerically(">=", unauthNone+2))
	g.Expect(counterFor(inbound.WebhooksTotal, "no-such-ns", "FinchApp/default", inbound.WebhookUnauthorized)).To(BeZero())
	g.Expect(counterFor(inbound.WebhooksTotal, f.ns, "FinchApp/nope", inbound.WebhookUnauthorized)).To(BeZero())

	g.Consistently(f.sim.CallCounts).Should(Equal(before), "no Finch call")
	conn = f.getConn("acme")
	g.Expect(conn.Annotations).NotTo(HaveKey(finchv1.WebhookEventAnnotation))
	g.Expect(conn.Status.Phase).To(Equal(finchv1.PhaseConnected))
}

// A verified delivery is recorded once; a replay of its event id (even with
// a different, validly signed body) does nothing, on this replica or on
// another one that has not seen it.
func TestWebhookAcceptedOnceAndDeduplicated(t *testing.T) {
	f := newFixture(t)
	g := f.g
	conn, _ := f.connectViaRedirect("acme", "acme")
	connID := conn.Status.ConnectionID
	before := f.quiet()

	// A rotation-style header: an unknown old signature next to the valid one.
	req := f.signedWebhook(f.app, accountUpdated(connID, "connected"), "msg_once", time.Now(), f.webhookSecret)
	req.Header.Set(finch.HeaderSignature, "v1,b2xkLXNpZ25hdHVyZQ== "+req.Header.Get(finch.HeaderSignature))
	accepted := counterFor(inbound.WebhooksTotal, f.ns, "FinchApp/"+f.app, inbound.WebhookAccepted)
	status, body := do(t, req)
	g.Expect(status).To(Equal(200))
	g.Expect(body).To(Equal(`{"status":"ok"}` + "\n"))
	g.Expect(counterFor(inbound.WebhooksTotal, f.ns, "FinchApp/"+f.app, inbound.WebhookAccepted)).To(Equal(accepted + 1))

	// Not reauth: the controller re-checks the connection (one introspection).
	g.Eventually(func(g Gomega) {
		c := f.getConn("acme")
		g.Expect(c.Annotations[finchv1.WebhookEventAnnotation]).To(Equal("msg_once"))
		g.Expect(c.Status.LastHandledWebhookEvent).To(Equal("msg_once"))
	}).Should(Succeed())
	after := f.quiet()
	g.Expect(after["GET /introspect"]).To(Equal(before["GET /introspect"] + 1))
	conn = f.getConn("acme")

	dups := counter(inbound.WebhooksTotal, inbound.WebhookDuplicate)
	// The same delivery again, and the same event id with another body that
	// would trigger a reauth session if it were recorded.
	status, _ = do(t, f.signedWebhook(f.app, accountUpdated(connID, "connected"), "msg_once", time.Now(), f.webhookSecret))
	g.Expect(status).To(Equal(200))
	status, _ = do(t, f.signedWebhook(f.app, accountUpdated(connID, "reauth"), "msg_once", time.Now(), f.webhookSecret))
	g.Expect(status).To(Equal(200))
	// Another replica (an empty dedup cache) gets it too: the annotation already says so.
	other := inbound.New(inbound.Config{Client: f.e.cached, APIReader: f.e.mgr.GetAPIReader(), Apps: f.e.op.Apps})
	rec := httptest.NewRecorder()
	r := f.signedWebhook(f.app, accountUpdated(connID, "reauth"), "msg_once", time.Now(), f.webhookSecret)
	r.RequestURI = r.URL.RequestURI()
	other.Handler().ServeHTTP(rec, r)
	g.Expect(rec.Code).To(Equal(200))
	g.Expect(counter(inbound.WebhooksTotal, inbound.WebhookDuplicate)).To(Equal(dups + 3))

	g.Consistently(func(g Gomega) {
		c := f.getConn("acme")
		g.Expect(c.ResourceVersion).To(Equal(conn.ResourceVersion), "nothing written")
		g.Expect(c.Annotations[finchv1.WebhookStatusAnnotation]).To(Equal("connected"))
		g.Expect(f.sim.CallCounts()).To(Equal(after), "no Finch call")
	}).Should(Succeed())
	g.Expect(f.sim.Calls("POST /connect/sessions/reauthenticate")).To(Equal(0))
}

// Deliveries the operator does not act on are acknowledged and counted.
func TestWebhookIgnoredAndUnknown(t *testing.T) {
	f := newFixture(t)
	g := f.g
	now := time.Now()
	cases := []struct {
		body   string
		result string
	}{
		{`{"event_type":"test","data":{}}`, inbound.WebhookIgnoredEventType},
		{`{"event_type":"directory.created","connection_id":"c1","data":{"individual_id":"i"}}`, inbound.WebhookIgnoredEventType},
		{`{"event_type":"account.updated","connection_id":"no-such-connection","data":{"status":"reauth"}}`, inbound.WebhookUnknownConnection},
		{`{"event_type":"account.updated","data":{"status":"reauth"}}`, inbound.WebhookUnknownConnection},
	}
	for i, tc := range cases {
		n := counter(inbound.WebhooksTotal, tc.result)
		status, body := do(t, f.signedWebhook(f.app, []byte(tc.body), "msg_"+strconv.Itoa(i), now, f.webhookSecret))
		g.Expect(status).To(Equal(200), tc.body)
		g.Expect(body).To(Equal(`{"status":"ok"}` + "\n"))
		g.Expect(counter(inbound.WebhooksTotal, tc.result)).To(Equal(n+1), tc.body)
	}
	n := counter(inbound.WebhooksTotal, inbound.WebhookBadRequest)
	status, _ := do(t, f.signedWebhook(f.app, []byte(`[1,2,3]`), "msg_array", now, f.webhookSecret))
	g.Expect(status).To(Equal(400))
	g.Expect(counter(inbound.WebhooksTotal, inbound.WebhookBadRequest)).To(Equal(n + 1))
	g.Expect(f.sim.CallCounts()).To(BeEmpty())
}
