package inbound_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/inbound"
)

// accountUpdatedByIDs is an account.updated without connection_id, which the
// SDK types allow (finch-api-go BaseWebhookEvent); empty ids are left out.
func accountUpdatedByIDs(companyID, accountID, status string) []byte {
	ev := map[string]any{
		"event_type": "account.updated",
		"data":       map[string]any{"status": status, "authentication_method": map[string]any{"type": "credential"}},
	}
	if companyID != "" {
		ev["company_id"] = companyID
	}
	if accountID != "" {
		ev["account_id"] = accountID
	}
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	return b
}

// connIn reads a FinchConnection inside an Eventually/Consistently.
func (f *fixture) connIn(g Gomega, name string) *finchv1.FinchConnection {
	conn := &finchv1.FinchConnection{}
	g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: name}, conn)).To(Succeed())
	return conn
}

// flipToReauth has Finch put a connection into reauth without sending its
// own webhook (which would carry connection_id), so that only the test's
// delivery can reach the operator.
func (f *fixture) flipToReauth(connectionID string) {
	f.t.Helper()
	f.sim.SetWebhookURL(f.clientID, "")
	f.g.Expect(f.sim.SetConnectionStatus(connectionID, "reauth")).To(Succeed())
}

// An account.updated with no connection_id is matched by company_id, which
// wins over account_id; the controller then publishes a reauth session.
func TestWebhookMatchByCompanyID(t *testing.T) {
	f := newFixture(t)
	g := f.g
	acme, _ := f.connectViaRedirect("acme", "acme")
	globex, _ := f.connectViaRedirect("globex", "globex")
	g.Expect(acme.Status.CompanyID).NotTo(BeEmpty())
	g.Expect(globex.Status.AccountID).NotTo(BeEmpty())
	g.Expect(acme.Status.CompanyID).NotTo(Equal(globex.Status.CompanyID))
	f.flipToReauth(acme.Status.ConnectionID)
	f.quiet()

	accepted := counter(inbound.WebhooksTotal, inbound.WebhookAccepted)
	// acme's company, globex's account: the company decides.
	body := accountUpdatedByIDs(acme.Status.CompanyID, globex.Status.AccountID, "reauth")
	status, resp := do(t, f.signedWebhook(f.app, body, "msg_by_company", time.Now(), f.webhookSecret))
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(resp).To(Equal(`{"status":"ok"}` + "\n"))
	g.Expect(counter(inbound.WebhooksTotal, inbound.WebhookAccepted)).To(Equal(accepted + 1))

	conn := f.waitSession("acme", finchv1.SessionReauthenticate)
	g.Expect(conn.Annotations[finchv1.WebhookEventAnnotation]).To(Equal("msg_by_company"))
	g.Expect(conn.Annotations[finchv1.WebhookStatusAnnotation]).To(Equal("reauth"))
	g.Consistently(func(g Gomega) {
		other := f.connIn(g, "globex")
		g.Expect(other.Annotations).NotTo(HaveKey(finchv1.WebhookEventAnnotation))
		g.Expect(other.Status.Session).To(BeNil())
	}).Should(Succeed())
	g.Expect(f.sim.Calls("POST /connect/sessions/reauthenticate")).To(Equal(1))
}

// Without connection_id and with an unknown (or no) company_id, account_id
// matches. Deliveries that match nothing — unknown ids, an unknown
// connection_id next to known deprecated ids (connection_id is never second-
// guessed), another app's connection — are acknowledged and counted.
func TestWebhookMatchByAccountIDAndUnmatched(t *testing.T) {
	f := newFixture(t)
	g := f.g
	acme, _ := f.connectViaRedirect("acme", "acme")
	f.createApp("second", func(a *finchv1.FinchApp) {
		a.Spec.WebhookSecretRef = &finchv1.WebhookSecretReference{Name: "finch-webhook"}
	})
	f.flipToReauth(acme.Status.ConnectionID)
	before := f.quiet()

	unmatched := []struct {
		name, app string
		body      []byte
	}{
		{"unknown company and account", f.app, accountUpdatedByIDs("no-such-company", "no-such-account", "reauth")},
		{"unknown connection_id, known company and account", f.app, []byte(`{"event_type":"account.updated","connection_id":"no-such-connection",` +
			`"company_id":"` + acme.Status.CompanyID + `","account_id":"` + acme.Status.AccountID + `","data":{"status":"reauth"}}`)},
		{"another app's connection", "second", accountUpdatedByIDs(acme.Status.CompanyID, acme.Status.AccountID, "reauth")},
	}
	for i, tc := range unmatched {
		n := counter(inbound.WebhooksTotal, inbound.WebhookUnknownConnection)
		status, resp := do(t, f.signedWebhook(tc.app, tc.body, "msg_unmatched_"+strconv.Itoa(i), time.Now(), f.webhookSecret))
		g.Expect(status).To(Equal(http.StatusOK), tc.name)
		g.Expect(resp).To(Equal(`{"status":"ok"}`+"\n"), tc.name)
		g.Expect(counter(inbound.WebhooksTotal, inbound.WebhookUnknownConnection)).To(Equal(n+1), tc.name)
	}
	g.Consistently(func(g Gomega) {
		g.Expect(f.connIn(g, "acme").Annotations).NotTo(HaveKey(finchv1.WebhookEventAnnotation))
		g.Expect(f.sim.CallCounts()).To(Equal(before), "no Finch call")
	}).Should(Succeed())

	for _, tc := range []struct {
		eventID string
		body    []byte
	}{
		{"msg_by_account", accountUpdatedByIDs("", acme.Status.AccountID, "reauth")},
		// The same event again, now with an unknown company: deduplicated.
		{"msg_by_account", accountUpdatedByIDs("no-such-company", acme.Status.AccountID, "reauth")},
	} {
		status, _ := do(t, f.signedWebhook(f.app, tc.body, tc.eventID, time.Now(), f.webhookSecret))
		g.Expect(status).To(Equal(http.StatusOK))
	}
	conn := f.waitSession("acme", finchv1.SessionReauthenticate)
	g.Expect(conn.Annotations[finchv1.WebhookEventAnnotation]).To(Equal("msg_by_account"))
	g.Expect(conn.Annotations[finchv1.WebhookStatusAnnotation]).To(Equal("reauth"))
	g.Expect(f.sim.Calls("POST /connect/sessions/reauthenticate")).To(Equal(1))

	// A fresh event with an unknown company but acme's account falls back too.
	status, _ := do(t, f.signedWebhook(f.app, accountUpdatedByIDs("no-such-company", acme.Status.AccountID, "reauth"),
		"msg_by_account_2", time.Now(), f.webhookSecret))
	g.Expect(status).To(Equal(http.StatusOK))
	g.Eventually(func(g Gomega) {
		g.Expect(f.connIn(g, "acme").Annotations[finchv1.WebhookEventAnnotation]).To(Equal("msg_by_account_2"))
	}).Should(Succeed())
}

// logCapture collects the JSON lines of a funcr logger at verbosity 0 (what
// the manager logs by default).
type logCapture struct {
	mu    sync.Mutex
	lines []string
}

func (c *logCapture) write(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, line)
}

// rejected returns the "webhook rejected" lines of an app (namespace/name)
// with a reason.
func (c *logCapture) rejected(t *testing.T, webhook, reason string) []map[string]any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, l := range c.lines {
		m := map[string]any{}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", l)
		}
		if m["msg"] == "webhook rejected" && m["webhook"] == webhook && m["reason"] == reason {
			out = append(out, m)
		}
	}
	return out
}

func (c *logCapture) all() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n")
}

// Rejected deliveries are logged at info level with the reason (never the
// secret, a signature or the body), rate-limited per app and reason: a flood
// of 100 forged deliveries yields a bounded number of lines, and the next line
// after the interval says how many were left out.
func TestWebhookRejectedLogged(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.createApp("nohook", nil)
	f.createApp("second", func(a *finchv1.FinchApp) {
		a.Spec.WebhookSecretRef = &finchv1.WebhookSecretReference{Name: "finch-webhook"}
	})
	capture := &logCapture{}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	srv := inbound.New(inbound.Config{
		Client: f.e.cached, APIReader: f.e.mgr.GetAPIReader(), Apps: f.e.op.Apps,
		Now: now, Log: funcr.NewJSON(capture.write, funcr.Options{Verbosity: 0}),
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	base, err := url.Parse(ts.URL)
	g.Expect(err).NotTo(HaveOccurred())
	send := func(r *http.Request) int {
		r.URL.Scheme, r.URL.Host, r.Host = base.Scheme, base.Host, ""
		status, _ := do(t, r)
		return status
	}

	otherKey := make([]byte, 32)
	_, _ = rand.Read(otherKey)
	otherSecret := base64.StdEncoding.EncodeToString(otherKey)
	marker := "BODY-MARKER-" + randHex(8)
	body := []byte(`{"event_type":"test","data":{"note":"` + marker + `"}}`)
	var signatures []string
	forged := func(app, eventID string) *http.Request {
		r := f.signedWebhook(app, body, eventID, now(), otherSecret)
		signatures = append(signatures, strings.TrimPrefix(r.Header.Get(finch.HeaderSignature), "v1,"))
		return r
	}
	appKey := f.ns + "/" + f.app

	cases := []struct {
		reason, webhook string
		status          int
		req             func() *http.Request
	}{
		{"no matching signature", appKey, 401, func() *http.Request { return forged(f.app, "msg_forged") }},
		{"timestamp too old", appKey, 401, func() *http.Request {
			return f.signedWebhook(f.app, body, "msg_stale", now().Add(-301*time.Second), f.webhookSecret)
		}},
		{"body too large", appKey, 413, func() *http.Request {
			big := append(bytes.Clone(body), bytes.Repeat([]byte(" "), inbound.DefaultMaxBodyBytes)...)
			return f.signedWebhook(f.app, big, "msg_big", now(), f.webhookSecret)
		}},
		{"no such app", f.ns + "/nope", 401, func() *http.Request {
			return f.signedWebhook("nope", body, "msg_nope", now(), f.webhookSecret)
		}},
		{"FinchApp has no webhookSecretRef", f.ns + "/nohook", 401, func() *http.Request {
			return f.signedWebhook("nohook", body, "msg_nohook", now(), f.webhookSecret)
		}},
		{"body is not a JSON object", appKey, 400, func() *http.Request {
			return f.signedWebhook(f.app, []byte(`[1,2,3]`), "msg_array", now(), f.webhookSecret)
		}},
	}
	for _, tc := range cases {
		g.Expect(send(tc.req())).To(Equal(tc.status), tc.reason)
		lines := capture.rejected(t, tc.webhook, tc.reason)
		g.Expect(lines).To(HaveLen(1), tc.reason)
		g.Expect(lines[0]).To(HaveKeyWithValue("level", BeNumerically("==", 0)), tc.reason)
		g.Expect(lines[0]).NotTo(HaveKey("suppressed"), tc.reason)
	}

	// A flood of forged deliveries at one instant.
	const flood = 100
	for i := range flood {
		g.Expect(send(forged(f.app, "msg_flood_"+strconv.Itoa(i)))).To(Equal(401))
	}
	logged := len(capture.rejected(t, appKey, "no matching signature"))
	g.Expect(logged).To(BeNumerically(">=", 1))
	g.Expect(logged).To(BeNumerically("<=", 10), "a flood of %d must not fill the log", flood)

	// Another app's budget is its own.
	g.Expect(send(forged("second", "msg_second"))).To(Equal(401))
	g.Expect(capture.rejected(t, f.ns+"/second", "no matching signature")).To(HaveLen(1))

	// After the interval, one line again, with the count of those left out.
	clock.Add(int64(31 * time.Second))
	g.Expect(send(forged(f.app, "msg_after"))).To(Equal(401))
	lines := capture.rejected(t, appKey, "no matching signature")
	g.Expect(lines).To(HaveLen(logged + 1))
	g.Expect(lines[logged]).To(HaveKeyWithValue("suppressed", BeNumerically("==", 1+flood-logged)))

	out := capture.all()
	g.Expect(out).NotTo(ContainSubstring(f.webhookSecret))
	g.Expect(out).NotTo(ContainSubstring(otherSecret))
	g.Expect(out).NotTo(ContainSubstring(marker), "no body")
	for _, sig := range signatures {
		g.Expect(out).NotTo(ContainSubstring(sig))
	}
}
