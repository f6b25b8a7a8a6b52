package inbound_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/internal/tokens"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// countingReader is the manager's uncached reader, counting the reads that
// reach the API server.
type countingReader struct {
	client.Reader
	gets, lists atomic.Int64
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.gets.Add(1)
	return c.Reader.Get(ctx, key, obj, opts...)
}

func (c *countingReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	c.lists.Add(1)
	return c.Reader.List(ctx, list, opts...)
}

// Behind an Ingress with --trusted-proxies unset every browser has the
// Ingress controller's address. A dozen junk callbacks from it exhaust the
// address's bucket; a real employer's callback from the same address, with
// the state the operator signed, is still served.
func TestCallbackJunkDoesNotLockOutEmployer(t *testing.T) {
	f := newFixture(t)
	g := f.g
	_, base := f.floodServer(inbound.DefaultCallbackExchanges.Requests)
	f.createApp("shared-ip", func(a *finchv1.FinchApp) { a.Spec.PublicURL = base })
	cb := f.callbackURL("shared-ip")
	f.newConnection("employer", "employer", func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "shared-ip"} })
	conn := f.waitSession("employer", finchv1.SessionConnect)

	const proxy = "203.0.113.9"
	limited := 0
	for i := range inbound.DefaultCallbackIPBurst + 2 {
		status, _ := getFrom(t, proxy, fmt.Sprintf("%s?code=junk-%d&state=made.up", cb, i))
		if status == http.StatusTooManyRequests {
			limited++
		}
	}
	g.Expect(limited).To(Equal(2), "the junk exhausted the address's bucket")

	code, err := f.sim.CompleteSession(conn.Status.Session.ID, finchsim.Completion{})
	g.Expect(err).NotTo(HaveOccurred())
	status, body := getFrom(t, proxy, cb+"?code="+code+"&state="+url.QueryEscape(stateOf(conn.Status.Session.ConnectURL)))
	g.Expect(status).To(Equal(http.StatusOK), "a real employer behind the same address: %s", body)
	g.Expect(body).To(Equal(inbound.PageConnected))
	f.waitConnected("employer")
}

// Refused callbacks for an app that does not exist are limited exactly like
// those for one that does: 429 versus 400 does not tell which apps exist.
func TestCallbackUnknownAppLimitedAlike(t *testing.T) {
	f := newFixture(t)
	g := f.g
	frozen := time.Now() // no bucket refills while the test runs, however slow the machine
	_, base := f.floodServer(inbound.DefaultCallbackExchanges.Requests, func(c *inbound.Config) {
		c.CallbackIPBurst = 1 << 20
		c.Now = func() time.Time { return frozen }
	})
	f.createApp("exists", func(a *finchv1.FinchApp) { a.Spec.PublicURL = base })
	statuses := func(app string) []int {
		var out []int
		for i := range inbound.DefaultCallbackAppBurst + 5 {
			status, _ := getFrom(t, fmt.Sprintf("198.51.100.%d", i%200+1),
				fmt.Sprintf("%s/callback/%s/%s/not-the-path?code=c-%d&state=s.t", base, f.ns, app, i))
			out = append(out, status)
		}
		return out
	}
	known, unknown := statuses("exists"), statuses("does-not-exist")
	g.Expect(known).To(ContainElement(http.StatusTooManyRequests), "the existing app's refusals are limited")
	g.Expect(unknown).To(Equal(known), "an unknown app's answers are the same, status for status")
}

// A tenant of a ClusterFinchApp that spends its own sessions' exchanges on
// junk codes uses up its namespace's ceiling only: another tenant's employer
// still connects.
func TestCallbackClusterAppCeilingPerNamespace(t *testing.T) {
	f := newFixture(t)
	g := f.g
	const ceiling = 3
	_, base := f.floodServer(ceiling)
	other := f.in("t-" + randHex(5))
	app := f.createClusterAppAt(base, f.ns, other.ns)

	f.newConnection("junk", "junk-"+f.ns, app.use)
	junk := f.waitSession("junk", finchv1.SessionConnect)
	other.newConnection("employer", "employer-"+other.ns, app.use)
	employer := other.waitSession("employer", finchv1.SessionConnect)
	cb := junk.Status.Session.RedirectURI

	junkState := url.QueryEscape(stateOf(junk.Status.Session.ConnectURL))
	for i := range ceiling {
		status, _ := getFrom(t, "203.0.113.30", fmt.Sprintf("%s?code=%08d-0000-4000-8000-000000000000&state=%s", cb, i, junkState))
		g.Expect(status).To(Equal(http.StatusBadRequest), "junk code %d: exchanged, rejected by Finch", i)
	}
	g.Expect(f.sim.Calls(finchsim.EndpointToken)).To(Equal(ceiling), "the first tenant used its whole ceiling")

	code, err := f.sim.CompleteSession(employer.Status.Session.ID, finchsim.Completion{})
	g.Expect(err).NotTo(HaveOccurred())
	status, body := getFrom(t, "192.0.2.50", cb+"?code="+code+"&state="+url.QueryEscape(stateOf(employer.Status.Session.ConnectURL)))
	g.Expect(status).To(Equal(http.StatusOK), "the other tenant's employer: %s", body)
	other.waitConnected("employer")
}

// A signed state carries its session's expiry: past it, the callback is
// refused before any lookup, even for a session no connection publishes any
// more (which once cost an uncached list across namespaces).
func TestCallbackExpiredStateRefusedBeforeLookup(t *testing.T) {
	f := newFixture(t)
	g := f.g
	reader := &countingReader{Reader: f.e.mgr.GetAPIReader()}
	var skew atomic.Int64
	_, base := f.floodServer(inbound.DefaultCallbackExchanges.Requests, func(c *inbound.Config) {
		c.APIReader = reader
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	f.createApp("expiring", func(a *finchv1.FinchApp) { a.Spec.PublicURL = base })
	f.newConnection("gone", "gone", func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "expiring"} })
	conn := f.waitSession("gone", finchv1.SessionConnect)
	state := stateOf(conn.Status.Session.ConnectURL)
	cb := conn.Status.Session.RedirectURI
	// The connection goes away: nothing publishes the session any more.
	g.Expect(f.e.k8s.Delete(f.ctx, conn)).To(Succeed())
	g.Eventually(func() bool {
		return f.e.cached.Get(f.ctx, client.ObjectKeyFromObject(conn), &finchv1.FinchConnection{}) != nil
	}).Should(BeTrue())

	skew.Store(int64(time.Until(conn.Status.Session.ExpiresAt.Time) + time.Minute)) // the session has expired
	expired := counter(inbound.CallbackRejected, inbound.RejectExpiredState)
	lists, gets := reader.lists.Load(), reader.gets.Load()
	status, body := getFrom(t, "203.0.113.40", cb+"?code=late-code&state="+url.QueryEscape(state))
	g.Expect(status).To(Equal(http.StatusBadRequest))
	g.Expect(body).To(Equal(inbound.PageInvalid))
	g.Expect(reader.lists.Load()-lists).To(BeZero(), "an uncached list for an expired state")
	g.Expect(reader.gets.Load()-gets).To(BeZero(), "an uncached read for an expired state")
	g.Expect(counter(inbound.CallbackRejected, inbound.RejectExpiredState)).To(Equal(expired + 1))
	g.Expect(f.sim.Calls(finchsim.EndpointToken)).To(BeZero())
}

// Unsigned webhooks for an app whose Secrets are missing cost no API read
// each: the failed resolution is remembered until the app changes (here:
// its Secret is created, the app turns Ready), then the app is resolved anew.
func TestWebhookUnusableAppCostsNoReads(t *testing.T) {
	f := newFixture(t)
	g := f.g
	reader := &countingReader{Reader: f.e.mgr.GetAPIReader()}
	srv := inbound.New(inbound.Config{
		Client: f.e.cached, APIReader: f.e.mgr.GetAPIReader(),
		Apps: &apps.Registry{Reader: reader, Writer: f.e.k8s, ClusterResourceNamespace: clusterResourceNamespace, APIHosts: simHosts},
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	app := &finchv1.FinchApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "broken"},
		Spec: finchv1.FinchAppSpec{
			CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "broken-credentials"},
			WebhookSecretRef:     &finchv1.WebhookSecretReference{Name: "finch-webhook"},
			APIURL:               f.simURL, PublicURL: ts.URL,
		},
	}
	f.create(app)
	g.Eventually(func(g Gomega) {
		got := &finchv1.FinchApp{}
		g.Expect(f.e.cached.Get(f.ctx, client.ObjectKeyFromObject(app), got)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, finchv1.ConditionStalled)).To(BeTrue())
	}).Should(Succeed())

	hook := func(eventID, secret string) (int, string) {
		r := f.signedWebhook("broken", accountUpdated("c", "reauth"), eventID, time.Now(), secret)
		r.URL, _ = url.Parse(apps.WebhookURL(ts.URL, types.NamespacedName{Namespace: f.ns, Name: "broken"}))
		return do(t, r)
	}
	before := reader.gets.Load()
	for i := range 50 {
		status, _ := hook(fmt.Sprintf("msg_unsigned_%d", i), "bm90LXRoZS1zZWNyZXQ=")
		g.Expect(status).To(Equal(http.StatusUnauthorized))
	}
	g.Expect(reader.gets.Load()-before).To(BeNumerically("<=", 3), "API reads for 50 unsigned webhooks")

	// The Secret appears: the app controller turns the app Ready (a new
	// resourceVersion), and the next delivery resolves it again.
	f.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "broken-credentials"},
		Data:       map[string][]byte{"client_id": []byte(f.clientID), "client_secret": []byte(f.clientSecret)},
	})
	g.Eventually(func() int {
		status, _ := hook("msg_signed_"+randHex(4), f.webhookSecret)
		return status
	}).Should(Equal(http.StatusOK))
}

// The manager's cache holds whole only the Secrets of the operator's types;
// any other Secret labelled for a connection is held as metadata.
func TestSecretCacheKeepsOnlyOperatorTypes(t *testing.T) {
	f := newFixture(t)
	g := f.g
	big := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "labelled-tls", Labels: map[string]string{finchv1.ConnectionLabel: "acme"}},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"blob": []byte(strings.Repeat("x", 256<<10))},
	}
	token := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "acme-finch-token", Labels: map[string]string{finchv1.ConnectionLabel: "acme"}},
		Type:       finchv1.TokenSecretType,
		Data:       map[string][]byte{finchv1.AccessTokenKey: []byte("tok")},
	}
	f.create(big)
	f.create(token)
	g.Eventually(func(g Gomega) {
		got := &corev1.Secret{}
		g.Expect(f.e.cached.Get(f.ctx, client.ObjectKeyFromObject(token), got)).To(Succeed())
		g.Expect(got.Data).To(HaveKey(finchv1.AccessTokenKey), "a token Secret is cached whole")
		g.Expect(f.e.cached.Get(f.ctx, client.ObjectKeyFromObject(big), got)).To(Succeed())
		g.Expect(got.Labels).To(HaveKeyWithValue(finchv1.ConnectionLabel, "acme"))
		g.Expect(got.Data).To(BeEmpty(), "another labelled Secret's data is not cached")
	}).Should(Succeed())
}

// A path that is not canonical is answered 404 by the server itself, with
// the security headers, instead of a redirect that repeats the code and the
// state in Location.
func TestNonCanonicalPathsNotRedirected(t *testing.T) {
	f := newFixture(t)
	g := f.g
	noFollow := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for _, p := range []string{
		"//callback/" + f.ns + "/default/seg",
		"/callback//" + f.ns + "/default/seg",
		"/callback/" + f.ns + "/../" + f.ns + "/default/seg",
		"/callback",
		"/cluster/callback",
		"//cluster/callback/app/seg",
	} {
		p := get(t, noFollow, f.e.ts.URL+p+"?code=secret-code&state=secret-state")
		g.Expect(p.status).To(BeNumerically(">=", 400), p.finalURL)
		g.Expect(p.header.Get("Location")).To(BeEmpty(), p.finalURL)
		g.Expect(p.header.Get("Cache-Control")).To(Equal("no-store"), p.finalURL)
		g.Expect(p.header.Get("Referrer-Policy")).To(Equal("no-referrer"), p.finalURL)
	}
}

// Webhook dedupe is per replica, so another replica may record an event
// again (a retry Finch sends it, its cache lagging the first write).
// Recording is idempotent: the second write of the same event changes
// nothing, and the controller does not act on it again.
func TestWebhookRecordingIdempotent(t *testing.T) {
	f := newFixture(t)
	g := f.g
	conn, _ := f.connectViaRedirect("acme", "acme")
	status, _ := do(t, f.signedWebhook(f.app, accountUpdated(conn.Status.ConnectionID, "reauth"), "msg_twice", time.Now(), f.webhookSecret))
	g.Expect(status).To(Equal(http.StatusOK))
	f.waitSession("acme", finchv1.SessionReauthenticate)
	g.Eventually(func(g Gomega) {
		g.Expect(f.connIn(g, "acme").Status.LastHandledWebhookEvent).To(Equal("msg_twice"))
	}).Should(Succeed())
	calls := f.quiet()
	conn = f.getConn("acme")

	// What a second replica does with the same event when its cache has not
	// seen the first write yet.
	g.Expect(tokens.RecordWebhook(f.ctx, f.e.k8s, conn.DeepCopy(), "msg_twice", "reauth")).To(Succeed())
	g.Consistently(func(g Gomega) {
		c := f.connIn(g, "acme")
		g.Expect(c.ResourceVersion).To(Equal(conn.ResourceVersion), "the second write changed nothing")
		g.Expect(f.sim.CallCounts()).To(Equal(calls), "no Finch call (no second reauth session)")
	}).Should(Succeed())
	g.Expect(f.sim.Calls(finchsim.EndpointReauthSession)).To(Equal(1))
}

// A token Secret that is not of the operator's type (an Opaque one labelled
// for its connection by hand) is cached as metadata only, and still read:
// the connection adopts its token, and it is never overwritten.
func TestLabelledOpaqueTokenSecretStillRead(t *testing.T) {
	f := newFixture(t)
	g := f.g
	fc, err := finch.New(finch.Config{BaseURL: f.simURL, ClientID: f.clientID, ClientSecret: f.clientSecret})
	g.Expect(err).NotTo(HaveOccurred())
	sess, err := fc.CreateSession(f.ctx, finch.SessionRequest{CustomerID: "legacy", CustomerName: "legacy", Products: []string{"company", "directory"}})
	g.Expect(err).NotTo(HaveOccurred())
	code, err := f.sim.CompleteSession(sess.SessionID, finchsim.Completion{})
	g.Expect(err).NotTo(HaveOccurred())
	tok, err := fc.ExchangeCode(f.ctx, finch.TokenRequest{Code: code})
	g.Expect(err).NotTo(HaveOccurred())
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "legacy-finch-token", Labels: map[string]string{finchv1.ConnectionLabel: "legacy"}},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{finchv1.AccessTokenKey: []byte(tok.AccessToken)},
	}
	f.create(sec)
	g.Eventually(func(g Gomega) {
		got := &corev1.Secret{}
		g.Expect(f.e.cached.Get(f.ctx, client.ObjectKeyFromObject(sec), got)).To(Succeed())
		g.Expect(got.Data).To(BeEmpty(), "metadata only in the cache")
	}).Should(Succeed())

	f.newConnection("legacy", "legacy", nil)
	conn, token := f.waitConnected("legacy")
	g.Expect(conn.Status.ConnectionID).To(Equal(tok.ConnectionID))
	g.Expect(token).To(Equal(tok.AccessToken))
	g.Expect(conn.Status.TokenVersion).To(Equal(sec.ResourceVersion), "the Secret was not rewritten")
}
