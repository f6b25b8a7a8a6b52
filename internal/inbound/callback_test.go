package inbound_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// finchClient talks to the fixture's simulator with the app's credentials,
// standing in for someone else acting at Finch.
func (f *fixture) finchClient() *finch.Client {
	c, err := finch.New(finch.Config{BaseURL: f.simURL, ClientID: f.clientID, ClientSecret: f.clientSecret})
	f.g.Expect(err).NotTo(HaveOccurred())
	return c
}

// noRedirects stops at the first redirect.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// Unknown apps, bad parameters, a wrong path segment and a state the operator
// did not sign all get the very same answer, and cost no Finch call.
func TestCallbackInvalidLinksLookAlike(t *testing.T) {
	f := newFixture(t)
	g := f.g
	base := f.e.ts.URL
	cb := f.callbackURL(f.app)
	f.newConnection("real", "real", nil)
	conn := f.waitSession("real", finchv1.SessionConnect)
	state := stateOf(conn.Status.Session.ConnectURL)
	g.Expect(state).To(HavePrefix(conn.Status.Session.ID+"."), "the published Connect URL carries a signed state")
	code := "90abecb6-2b8e-4e45-a4c1-6b4f8e0d1a2c"
	forged := conn.Status.Session.ID + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	wrongPath := cb[:strings.LastIndex(cb, "/")] + "/guessed-path-segment"
	urls := []string{
		cb,                                      // no code
		cb + "?code=",                           // empty code
		cb + "?state=" + url.QueryEscape(state), // state only
		cb + "?code=a&code=b&state=" + url.QueryEscape(state),      // two codes
		cb + "?code=" + url.QueryEscape("a b<script>"),             // not a code
		cb + "?code=" + code,                                       // no state
		cb + "?code=" + code + "&state=" + url.QueryEscape(forged), // a state the operator did not sign
		cb + "?code=" + code + "&state=garbage",
		wrongPath + "?code=" + code + "&state=" + url.QueryEscape(state),                          // guessed path segment
		base + "/callback/" + f.ns + "/default?code=" + code + "&state=" + url.QueryEscape(state), // no path segment
		base + "/callback/" + f.ns + "/no-such-app/x?code=abc&state=s",
		base + "/callback/no-such-namespace/default/x?code=abc&state=s",
		base + "/callback/Not_A_Namespace/default/x?code=abc&state=s",
		base + "/callback/" + f.ns + "?code=abc",
		cb + "/extra?code=abc&state=s",
	}
	invalid := counter(inbound.CallbacksTotal, inbound.CallbackInvalid)
	for _, u := range urls {
		p := get(t, noRedirects, u)
		g.Expect(p.status).To(Equal(http.StatusBadRequest), u)
		g.Expect(p.body).To(Equal(inbound.PageInvalid), u)
		g.Expect(p.body).NotTo(ContainSubstring("<script>"))
	}
	resp, err := http.Post(cb+"?code=abc&state="+url.QueryEscape(state), "text/plain", nil)
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusBadRequest))
	g.Expect(counter(inbound.CallbacksTotal, inbound.CallbackInvalid)).To(Equal(invalid + float64(len(urls)) + 1))
	g.Expect(f.sim.Calls("POST /auth/token")).To(BeZero())

	p := get(t, noRedirects, base+"/healthz")
	g.Expect(p.status).To(Equal(200))
	g.Expect(p.body).To(Equal("ok"))
}

// A used code gets the "expired or already used" page and stores nothing; a
// made-up one too. Each costs one exchange, and a session whose codes Finch
// keeps rejecting is then refused without asking Finch again.
func TestCallbackUsedCode(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.newConnection("used", "used", nil)
	conn := f.waitSession("used", finchv1.SessionConnect)
	state := url.QueryEscape(stateOf(conn.Status.Session.ConnectURL))
	code, err := f.sim.CompleteSession(conn.Status.Session.ID, finchsim.Completion{})
	g.Expect(err).NotTo(HaveOccurred())
	// Someone else exchanges the code first.
	tok, err := f.finchClient().ExchangeCode(context.Background(), finch.TokenRequest{Code: code, RedirectURI: conn.Status.Session.RedirectURI})
	g.Expect(err).NotTo(HaveOccurred())

	rejected := counter(inbound.CallbacksTotal, inbound.CallbackCodeRejected)
	for _, c := range []string{code, "00000000-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000001"} {
		p := get(t, browser, f.callbackURL(f.app)+"?code="+c+"&state="+state)
		g.Expect(p.status).To(Equal(http.StatusBadRequest))
		g.Expect(p.body).To(Equal(inbound.PageExpired))
		g.Expect(p.body).To(ContainSubstring("expired or was already used"))
		g.Expect(p.body).NotTo(ContainSubstring(tok.AccessToken))
		g.Expect(p.body).NotTo(ContainSubstring(c))
	}
	g.Expect(counter(inbound.CallbacksTotal, inbound.CallbackCodeRejected)).To(Equal(rejected + 3))
	exchanges := f.sim.Calls("POST /auth/token")
	g.Expect(exchanges).To(Equal(4)) // ours 3 + the other party's 1
	// The session is now slowed down: a fourth code waits (429, Retry-After)
	// without a Finch call; a replayed code gets its remembered answer.
	p := get(t, browser, f.callbackURL(f.app)+"?code=00000000-0000-4000-8000-000000000002&state="+state)
	g.Expect(p.status).To(Equal(http.StatusTooManyRequests))
	g.Expect(p.header.Get("Retry-After")).NotTo(BeEmpty())
	p = get(t, browser, f.callbackURL(f.app)+"?code="+code+"&state="+state)
	g.Expect(p.status).To(Equal(http.StatusBadRequest))
	g.Expect(p.body).To(Equal(inbound.PageExpired))
	g.Expect(f.sim.Calls("POST /auth/token")).To(Equal(exchanges))
	err = f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "used-finch-token"}, &corev1.Secret{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no token Secret")
	g.Eventually(func(g Gomega) {
		evs := f.events(g, "FinchApp", f.app, finchv1.ReasonCallbackFailed)
		g.Expect(evs).NotTo(BeEmpty())
		g.Expect(evs[0].Type).To(Equal(corev1.EventTypeWarning))
		g.Expect(evs[0].Note).To(ContainSubstring("invalid_grant"))
		g.Expect(evs[0].Note).NotTo(ContainSubstring(code))
	}).Should(Succeed())
}

// A session created outside the operator (no state it signed) cannot spend
// anything through the callback: refused before any Finch call.
func TestCallbackForeignSessionRefused(t *testing.T) {
	f := newFixture(t)
	g := f.g
	redirect := f.callbackURL(f.app)
	sess, err := f.finchClient().CreateSession(context.Background(), finch.SessionRequest{
		CustomerID: "stranger", CustomerName: "Stranger Inc", Products: []string{"company"}, RedirectURI: &redirect,
	})
	g.Expect(err).NotTo(HaveOccurred())
	before := f.sim.Calls("POST /auth/token")
	p := get(t, browser, sess.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusBadRequest))
	g.Expect(p.body).To(Equal(inbound.PageInvalid))
	g.Expect(f.sim.Calls("POST /auth/token")).To(Equal(before))
	g.Expect(f.sim.Calls("POST /disconnect")).To(BeZero())
}

// Finch down: the employer is told to retry, and a reload with the same
// (unspent) code then connects. Reloading after success shows success again
// without another exchange.
func TestCallbackFinchUnavailableThenRetry(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.newConnection("flaky", "flaky", nil)
	conn := f.waitSession("flaky", finchv1.SessionConnect)
	f.sim.InjectFault("POST /auth/token", finchsim.Fault{Status: http.StatusServiceUnavailable})
	p := get(t, browser, conn.Status.Session.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusBadGateway))
	g.Expect(p.body).To(Equal(inbound.PageFinchUnavailable))
	callback := p.finalURL

	p = get(t, browser, callback)
	g.Expect(p.status).To(Equal(http.StatusOK))
	g.Expect(p.body).To(Equal(inbound.PageConnected))
	f.waitConnected("flaky")
	exchanges := f.sim.Calls("POST /auth/token")
	g.Expect(exchanges).To(Equal(2))

	p = get(t, browser, callback) // a reload
	g.Expect(p.status).To(Equal(http.StatusOK))
	g.Expect(p.body).To(Equal(inbound.PageConnected))
	g.Expect(f.sim.Calls("POST /auth/token")).To(Equal(exchanges))
}

// With spec.successURL the browser is sent on with a 303.
func TestCallbackSuccessURL(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.createApp("branded", func(a *finchv1.FinchApp) { a.Spec.SuccessURL = "https://example.com/connected" })
	f.newConnection("branded", "branded", func(c *finchv1.FinchConnection) {
		c.Spec.AppRef = &finchv1.AppReference{Name: "branded"}
	})
	conn := f.waitSession("branded", finchv1.SessionConnect)
	// Follow the simulator's redirect to the callback, stop at ours.
	c := &http.Client{CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == "example.com" {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	p := get(t, c, conn.Status.Session.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusSeeOther))
	g.Expect(p.header.Get("Location")).To(Equal("https://example.com/connected"))
	f.waitConnected("branded")
}

// A migrated connection whose customerID differs from Finch's customer_id is
// found by its connection_id (the IndexConnectionID fallback).
func TestCallbackMatchesByConnectionID(t *testing.T) {
	f := newFixture(t)
	g := f.g
	fc := f.finchClient()
	ctx := context.Background()
	// A connection made outside the operator, for customer "legacy-42".
	sess, err := fc.CreateSession(ctx, finch.SessionRequest{CustomerID: "legacy-42", CustomerName: "Legacy", Products: []string{"company"}})
	g.Expect(err).NotTo(HaveOccurred())
	code, err := f.sim.CompleteSession(sess.SessionID, finchsim.Completion{})
	g.Expect(err).NotTo(HaveOccurred())
	tok, err := fc.ExchangeCode(ctx, finch.TokenRequest{Code: code})
	g.Expect(err).NotTo(HaveOccurred())
	// Migrated under another customerID, with its token in a labelled Secret.
	f.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "migrated-finch-token",
			Labels: map[string]string{finchv1.ConnectionLabel: "migrated"}},
		Data: map[string][]byte{finchv1.AccessTokenKey: []byte(tok.AccessToken)},
	})
	f.newConnection("migrated", "acme-migrated", func(c *finchv1.FinchConnection) {
		c.Spec.Products = []finchv1.Product{"company"} // what the connection grants: no products reauth
	})
	conn, _ := f.waitConnected("migrated")
	g.Expect(conn.Status.ConnectionID).To(Equal(tok.ConnectionID))

	// The operator's reauthentication session: Finch echoes customer_id
	// legacy-42, which no FinchConnection has, so the connection_id decides.
	patch := client.MergeFrom(conn.DeepCopy())
	conn.Annotations = map[string]string{finchv1.ReauthRequestedAtAnnotation: "now"}
	g.Expect(f.e.k8s.Patch(ctx, conn, patch)).To(Succeed())
	conn = f.waitSession("migrated", finchv1.SessionReauthenticate)
	p := get(t, browser, conn.Status.Session.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusOK))
	g.Expect(p.body).To(Equal(inbound.PageConnected))
	_, newToken := f.waitConnected("migrated")
	g.Expect(newToken).NotTo(Equal(tok.AccessToken))
	g.Expect(f.sim.Calls("POST /disconnect")).To(Equal(0))
}

// The token Secret belongs to someone else: nothing is overwritten, the
// employer is asked to contact the administrator, who gets an Event.
func TestCallbackTokenSecretNotOwned(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "taken-finch-token"},
		Data:       map[string][]byte{"something": []byte("else")},
	})
	f.newConnection("taken", "taken", nil)
	conn := f.waitSession("taken", finchv1.SessionConnect)
	failed := counter(inbound.CallbacksTotal, inbound.CallbackStoreFailed)
	p := get(t, browser, conn.Status.Session.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusInternalServerError))
	g.Expect(p.body).To(Equal(inbound.PageContactAdmin))
	g.Expect(counter(inbound.CallbacksTotal, inbound.CallbackStoreFailed)).To(Equal(failed + 1))
	sec := &corev1.Secret{}
	g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "taken-finch-token"}, sec)).To(Succeed())
	g.Expect(sec.Data).To(Equal(map[string][]byte{"something": []byte("else")}))
	g.Expect(f.sim.Calls("POST /disconnect")).To(Equal(0), "the connection is claimed by its FinchConnection")
	g.Eventually(func(g Gomega) {
		evs := f.events(g, "FinchConnection", "taken", finchv1.ReasonTokenSecretNotOwned)
		g.Expect(evs).NotTo(BeEmpty())
		g.Expect(evs[0].Type).To(Equal(corev1.EventTypeWarning))
	}).Should(Succeed())
}
