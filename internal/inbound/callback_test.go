package inbound

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/finchsim"
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

// Unknown apps and bad parameters get the very same answer, and cost no Finch call.
func TestCallbackInvalidLinksLookAlike(t *testing.T) {
	f := newFixture(t)
	g := f.g
	base := f.e.ts.URL
	cb := f.callbackURL(f.app)
	urls := []string{
		cb,                    // no code
		cb + "?code=",         // empty code
		cb + "?state=xyz",     // state only
		cb + "?code=a&code=b", // two codes
		cb + "?code=" + url.QueryEscape("a b<script>"), // not a code
		f.callbackURL("no-such-app") + "?code=abc",
		base + "/callback/no-such-namespace/default?code=abc",
		base + "/callback/Not_A_Namespace/default?code=abc",
		base + "/callback/" + f.ns + "?code=abc",
		base + "/callback/" + f.ns + "/default/extra?code=abc",
	}
	invalid := counter(callbacksTotal, callbackInvalid)
	for _, u := range urls {
		p := get(t, noRedirects, u)
		g.Expect(p.status).To(Equal(http.StatusBadRequest), u)
		g.Expect(p.body).To(Equal(string(pageInvalid.body)), u)
		g.Expect(p.body).NotTo(ContainSubstring("<script>"))
	}
	resp, err := http.Post(cb+"?code=abc", "text/plain", nil)
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusBadRequest))
	g.Expect(counter(callbacksTotal, callbackInvalid)).To(Equal(invalid + float64(len(urls)) + 1))
	g.Expect(f.sim.CallCounts()).To(BeEmpty())

	p := get(t, noRedirects, base+"/healthz")
	g.Expect(p.status).To(Equal(200))
	g.Expect(p.body).To(Equal("ok"))
}

// A used code gets the "expired or already used" page and stores nothing;
// a made-up one too.
func TestCallbackUsedCode(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.newConnection("used", "used", nil)
	conn := f.waitSession("used", finchv1.SessionConnect)
	code, err := f.sim.CompleteSession(conn.Status.Session.ID, finchsim.Completion{})
	g.Expect(err).NotTo(HaveOccurred())
	// Someone else exchanges the code first.
	tok, err := f.finchClient().ExchangeCode(context.Background(), finch.TokenRequest{Code: code, RedirectURI: f.callbackURL(f.app)})
	g.Expect(err).NotTo(HaveOccurred())

	rejected := counter(callbacksTotal, callbackCodeRejected)
	for _, c := range []string{code, "00000000-0000-4000-8000-000000000000"} {
		p := get(t, browser, f.callbackURL(f.app)+"?code="+c+"&state=s1")
		g.Expect(p.status).To(Equal(http.StatusBadRequest))
		g.Expect(p.body).To(Equal(string(pageExpired.body)))
		g.Expect(p.body).To(ContainSubstring("expired or was already used"))
		g.Expect(p.body).NotTo(ContainSubstring(tok.AccessToken))
		g.Expect(p.body).NotTo(ContainSubstring(c))
	}
	g.Expect(counter(callbacksTotal, callbackCodeRejected)).To(Equal(rejected + 2))
	err = f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "used-finch-token"}, &corev1.Secret{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no token Secret")
	g.Eventually(func(g Gomega) {
		evs := f.events(g, "FinchApp", f.app, ReasonCallbackFailed)
		g.Expect(evs).NotTo(BeEmpty())
		g.Expect(evs[0].Type).To(Equal(corev1.EventTypeWarning))
		g.Expect(evs[0].Note).To(ContainSubstring("invalid_grant"))
		g.Expect(evs[0].Note).NotTo(ContainSubstring(code))
	}).Should(Succeed())
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
	g.Expect(p.body).To(Equal(string(pageFinchUnavailable.body)))
	callback := p.finalURL

	p = get(t, browser, callback)
	g.Expect(p.status).To(Equal(http.StatusOK))
	g.Expect(p.body).To(Equal(string(pageConnected.body)))
	f.waitConnected("flaky")
	exchanges := f.sim.Calls("POST /auth/token")
	g.Expect(exchanges).To(Equal(2))

	p = get(t, browser, callback) // a reload
	g.Expect(p.status).To(Equal(http.StatusOK))
	g.Expect(p.body).To(Equal(string(pageConnected.body)))
	g.Expect(f.sim.Calls("POST /auth/token")).To(Equal(exchanges))
}

// With spec.successURL the browser is sent on with a 303.
func TestCallbackSuccessURL(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.createApp("branded", func(a *finchv1.FinchApp) { a.Spec.SuccessURL = "https://example.com/connected" })
	f.newConnection("branded", "branded", func(c *finchv1.FinchConnection) {
		c.Spec.AppRef = &finchv1.LocalObjectReference{Name: "branded"}
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

// A valid code for a customer without a FinchConnection: the token is not
// stored; it is revoked because nothing claims its connection.
func TestCallbackUnmatchedCustomerRevokedWhenUnclaimed(t *testing.T) {
	f := newFixture(t)
	g := f.g
	redirect := f.callbackURL(f.app)
	sess, err := f.finchClient().CreateSession(context.Background(), finch.SessionRequest{
		CustomerID: "stranger", CustomerName: "Stranger Inc", Products: []string{"company"}, RedirectURI: &redirect,
	})
	g.Expect(err).NotTo(HaveOccurred())
	unmatched := counter(callbacksTotal, callbackUnmatched)
	p := get(t, browser, sess.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusOK))
	g.Expect(p.body).To(Equal(string(pageReceived.body)))
	g.Expect(counter(callbacksTotal, callbackUnmatched)).To(Equal(unmatched + 1))

	conns := f.sim.Connections()
	g.Expect(conns).To(HaveLen(1))
	g.Expect(conns[0].Disconnected).To(BeTrue(), "revoked")
	g.Expect(f.sim.Calls("POST /disconnect")).To(Equal(1))
	secrets := &corev1.SecretList{}
	g.Expect(f.e.k8s.List(f.ctx, secrets, client.InNamespace(f.ns), client.HasLabels{finchv1.ConnectionLabel})).To(Succeed())
	g.Expect(secrets.Items).To(BeEmpty())
	g.Eventually(func(g Gomega) {
		evs := f.events(g, "FinchApp", f.app, ReasonUnmatchedCode)
		g.Expect(evs).To(HaveLen(1))
		g.Expect(evs[0].Note).To(ContainSubstring(`customer_id "stranger"`))
		g.Expect(evs[0].Note).To(ContainSubstring(conns[0].ID))
		g.Expect(evs[0].Note).To(ContainSubstring("disconnected at Finch"))
	}).Should(Succeed())
}

// An unmatched code whose connection is still claimed (here by the token
// Secret a deleted FinchConnection retained) is never revoked.
func TestCallbackUnmatchedCustomerKeptWhenClaimed(t *testing.T) {
	f := newFixture(t)
	g := f.g
	conn, _ := f.connectViaRedirect("retained", "retained")
	connID := conn.Status.ConnectionID
	g.Expect(f.e.k8s.Delete(f.ctx, conn)).To(Succeed()) // deletionPolicy Retain
	g.Eventually(func() bool {
		return apierrors.IsNotFound(f.e.k8s.Get(f.ctx, client.ObjectKeyFromObject(conn), &finchv1.FinchConnection{}))
	}).Should(BeTrue())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(f.e.cached.Get(f.ctx, client.ObjectKeyFromObject(conn), &finchv1.FinchConnection{}))
	}).Should(BeTrue())

	// Someone sends the employer a reauthentication session outside the operator.
	redirect := f.callbackURL(f.app)
	sess, err := f.finchClient().Reauthenticate(context.Background(), finch.ReauthRequest{ConnectionID: connID, RedirectURI: &redirect})
	g.Expect(err).NotTo(HaveOccurred())
	p := get(t, browser, sess.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusOK))
	g.Expect(p.body).To(Equal(string(pageReceived.body)))

	info, _ := f.sim.Connection(connID)
	g.Expect(info.Disconnected).To(BeFalse(), "a claimed connection is never disconnected")
	g.Expect(f.sim.Calls("POST /disconnect")).To(Equal(0))
	g.Eventually(func(g Gomega) {
		evs := f.events(g, "FinchApp", f.app, ReasonUnmatchedCode)
		g.Expect(evs).To(HaveLen(1))
		g.Expect(evs[0].Note).To(ContainSubstring("not revoked because token Secret " + f.ns + "/retained-finch-token claims"))
	}).Should(Succeed())
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
	f.newConnection("migrated", "acme-migrated", nil)
	conn, _ := f.waitConnected("migrated")
	g.Expect(conn.Status.ConnectionID).To(Equal(tok.ConnectionID))

	redirect := f.callbackURL(f.app)
	reauth, err := fc.Reauthenticate(ctx, finch.ReauthRequest{ConnectionID: tok.ConnectionID, RedirectURI: &redirect})
	g.Expect(err).NotTo(HaveOccurred())
	p := get(t, browser, reauth.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusOK))
	g.Expect(p.body).To(Equal(string(pageConnected.body)))
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
	failed := counter(callbacksTotal, callbackStoreFailed)
	p := get(t, browser, conn.Status.Session.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusInternalServerError))
	g.Expect(p.body).To(Equal(string(pageContactAdmin.body)))
	g.Expect(counter(callbacksTotal, callbackStoreFailed)).To(Equal(failed + 1))
	sec := &corev1.Secret{}
	g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "taken-finch-token"}, sec)).To(Succeed())
	g.Expect(sec.Data).To(Equal(map[string][]byte{"something": []byte("else")}))
	g.Expect(f.sim.Calls("POST /disconnect")).To(Equal(0), "the connection is claimed by its FinchConnection")
	g.Eventually(func(g Gomega) {
		evs := f.events(g, "FinchConnection", "taken", ReasonTokenSecretNotOwned)
		g.Expect(evs).NotTo(BeEmpty())
		g.Expect(evs[0].Type).To(Equal(corev1.EventTypeWarning))
	}).Should(Succeed())
}
