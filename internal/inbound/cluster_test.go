package inbound_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// clusterApp is a ClusterFinchApp of the fixture's simulator (an application
// of its own there), its Secrets in the cluster resource namespace.
type clusterApp struct {
	name, clientID, webhookSecret string
}

func (f *fixture) createClusterApp(namespaces ...string) *clusterApp {
	f.t.Helper()
	return f.createClusterAppAt(f.e.ts.URL, namespaces...)
}

// createClusterAppAt is createClusterApp served by the inbound server at publicURL.
func (f *fixture) createClusterAppAt(publicURL string, namespaces ...string) *clusterApp {
	f.t.Helper()
	a := &clusterApp{name: "platform-" + randHex(4), clientID: "cluster-" + randHex(6)}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	a.webhookSecret = base64.StdEncoding.EncodeToString(key)
	f.sim.AddApp(finchsim.AppConfig{
		ClientID: a.clientID, ClientSecret: f.clientSecret,
		WebhookURL: apps.WebhookURL(publicURL, types.NamespacedName{Name: a.name}), WebhookSecret: a.webhookSecret,
	})
	f.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: clusterResourceNamespace, Name: a.name + "-credentials"},
		Data:       map[string][]byte{"client_id": []byte(a.clientID), "client_secret": []byte(f.clientSecret)},
	})
	f.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: clusterResourceNamespace, Name: a.name + "-webhook"},
		Data:       map[string][]byte{"webhook_secret": []byte(a.webhookSecret)},
	})
	app := &finchv1.ClusterFinchApp{
		ObjectMeta: metav1.ObjectMeta{Name: a.name},
		Spec: finchv1.ClusterFinchAppSpec{
			FinchAppSpec: finchv1.FinchAppSpec{
				CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: a.name + "-credentials"},
				WebhookSecretRef:     &finchv1.WebhookSecretReference{Name: a.name + "-webhook"},
				APIURL:               f.simURL,
				PublicURL:            publicURL,
				RateLimit:            &finchv1.RateLimit{Requests: 100000, Window: &metav1.Duration{Duration: time.Minute}},
			},
			Conditions: []finchv1.ClusterFinchAppCondition{{Namespaces: namespaces}},
		},
	}
	f.create(app)
	f.t.Cleanup(func() { _ = f.e.k8s.Delete(f.ctx, app) })
	f.g.Eventually(func(g Gomega) {
		got := &finchv1.ClusterFinchApp{}
		g.Expect(f.e.k8s.Get(f.ctx, client.ObjectKeyFromObject(app), got)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, finchv1.ConditionReady)).To(BeTrue(), "ClusterFinchApp Ready: %v", got.Status.Conditions)
		g.Expect(f.e.cached.Get(f.ctx, client.ObjectKeyFromObject(app), &finchv1.ClusterFinchApp{})).To(Succeed())
	}).Should(Succeed())
	return a
}

func (a *clusterApp) get(f *fixture) *finchv1.ClusterFinchApp {
	f.t.Helper()
	got := &finchv1.ClusterFinchApp{}
	f.g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Name: a.name}, got)).To(Succeed())
	return got
}

func (a *clusterApp) use(c *finchv1.FinchConnection) {
	c.Spec.AppRef = &finchv1.AppReference{Kind: finchv1.ClusterFinchAppKind, Name: a.name}
}

// in is the fixture seen from another tenant namespace (created here).
func (f *fixture) in(ns string) *fixture {
	f.t.Helper()
	f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	g := *f
	g.ns = ns
	return &g
}

// One ClusterFinchApp serves two tenant namespaces through its own inbound
// paths: the employer's redirect lands on /cluster/callback/<app>/..., the
// token goes to the connection's namespace (never the cluster resource
// namespace), and Finch's webhook on /cluster/webhooks/<app> reaches the one
// connection it names, with the same signature checks as a FinchApp's.
func TestClusterAppCallbackAndWebhook(t *testing.T) {
	f := newFixture(t)
	g := f.g
	other := f.in("t-" + randHex(5))
	app := f.createClusterApp(f.ns, other.ns)

	st := app.get(f).Status
	g.Expect(st.CallbackURL).To(HavePrefix(f.e.ts.URL + "/cluster/callback/" + app.name + "/"))
	g.Expect(st.WebhookURL).To(Equal(f.e.ts.URL + "/cluster/webhooks/" + app.name))
	g.Expect(st.SecretNamespace).To(Equal(clusterResourceNamespace))

	// A cluster app's callbacks are counted in the namespace of the
	// connection whose state came back, so each tenant sees its own.
	appLabel := "ClusterFinchApp/" + app.name
	connectedBefore := map[string]float64{}
	for _, tenant := range []*fixture{f, other} {
		connectedBefore[tenant.ns] = counterFor(inbound.CallbacksTotal, tenant.ns, appLabel, inbound.CallbackConnected)
	}
	conns := map[string]*finchv1.FinchConnection{}
	for _, tenant := range []*fixture{f, other} {
		tenant.newConnection("acme", "acme-"+tenant.ns, app.use)
		conn := tenant.waitSession("acme", finchv1.SessionConnect)
		g.Expect(conn.Status.Session.RedirectURI).To(HavePrefix(f.e.ts.URL+"/cluster/callback/"+app.name+"/"), "Finch redirects to the cluster app's callback")
		p := get(t, browser, conn.Status.Session.ConnectURL)
		g.Expect(p.status).To(Equal(http.StatusOK), p.body)
		g.Expect(p.body).To(Equal(inbound.PageConnected))
		conns[tenant.ns], _ = tenant.waitConnected("acme")
		// The token is the tenant's; nothing lands in the cluster resource namespace.
		err := f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: clusterResourceNamespace, Name: conns[tenant.ns].TokenSecretName()}, &corev1.Secret{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "token Secret in the cluster resource namespace: %v", err)
	}
	g.Eventually(func(g Gomega) {
		got := &finchv1.ClusterFinchApp{}
		g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Name: app.name}, got)).To(Succeed())
		g.Expect(got.Status.NamespaceCount).To(Equal(int32(2)))
		g.Expect(got.Status.Connections.Connected).To(Equal(int32(2)))
	}).Should(Succeed())
	for _, tenant := range []*fixture{f, other} {
		g.Expect(counterFor(inbound.CallbacksTotal, tenant.ns, appLabel, inbound.CallbackConnected)).To(Equal(connectedBefore[tenant.ns]+1), tenant.ns)
	}

	// Finch puts the second tenant's connection into reauth and tells the
	// cluster app's webhook: that connection, and only it, gets a
	// reauthentication session.
	g.Expect(f.sim.SetConnectionStatus(conns[other.ns].Status.ConnectionID, "reauth")).To(Succeed())
	other.waitSession("acme", finchv1.SessionReauthenticate)
	g.Consistently(func(g Gomega) {
		g.Expect(f.connIn(g, "acme").Status.Session).To(BeNil(), "the first tenant's connection is untouched")
	}).Should(Succeed())

	// The same signature checks as a FinchApp's webhook.
	body := accountUpdated(conns[f.ns].Status.ConnectionID, "reauth")
	now := time.Now()
	clusterReq := func(path, secret string) *http.Request {
		r := f.signedWebhook(f.app, body, "msg_"+randHex(8), now, secret)
		r.URL.Path = path
		return r
	}
	forgedKey := make([]byte, 32)
	_, _ = rand.Read(forgedKey)
	forged := base64.StdEncoding.EncodeToString(forgedKey)
	unauthorized := counterFor(inbound.WebhooksTotal, "", appLabel, inbound.WebhookUnauthorized)
	for _, c := range []struct {
		name, path, secret string
	}{
		{"signed with another secret", "/cluster/webhooks/" + app.name, forged},
		{"signed with a FinchApp's secret", "/cluster/webhooks/" + app.name, f.webhookSecret},
		{"no such ClusterFinchApp", "/cluster/webhooks/no-such-app", app.webhookSecret},
		{"the cluster app's name under a tenant's namespace", "/webhooks/" + f.ns + "/" + app.name, app.webhookSecret},
	} {
		status, _ := do(t, clusterReq(c.path, c.secret))
		g.Expect(status).To(Equal(http.StatusUnauthorized), c.name)
	}
	// The two deliveries to the existing cluster app name it (no namespace: it
	// serves several).
	g.Expect(counterFor(inbound.WebhooksTotal, "", appLabel, inbound.WebhookUnauthorized)).To(Equal(unauthorized + 2))
	g.Consistently(func(g Gomega) {
		g.Expect(f.connIn(g, "acme").Status.Session).To(BeNil(), "no rejected delivery reached the connection")
	}).Should(Succeed())

	// A redirect to the cluster callback of an unknown app is refused.
	p := get(t, browser, f.e.ts.URL+"/cluster/callback/no-such-app/"+randHex(8)+"?code=x&state=y")
	g.Expect(p.status).To(BeNumerically(">=", 400))
	g.Expect(bytes.Contains([]byte(p.body), []byte(inbound.PageConnected))).To(BeFalse())
	g.Expect(strings.Contains(p.finalURL, "/cluster/callback/")).To(BeTrue())
}

// A namespace the ClusterFinchApp stops admitting gets no token: a Connect
// link it was sent before is refused at the callback, before any code
// exchange, and nothing is written there.
func TestClusterAppCallbackRefusesNamespaceNoLongerAdmitted(t *testing.T) {
	f := newFixture(t)
	g := f.g
	app := f.createClusterApp(f.ns)
	f.newConnection("acme", "acme-"+f.ns, app.use)
	conn := f.waitSession("acme", finchv1.SessionConnect)

	// Admit another namespace only, and wait until the server's cache sees it.
	g.Eventually(func() error {
		a := app.get(f)
		a.Spec.Conditions = []finchv1.ClusterFinchAppCondition{{Namespaces: []string{"somewhere-else"}}}
		return f.e.k8s.Update(f.ctx, a)
	}).Should(Succeed())
	g.Eventually(func(g Gomega) {
		got := &finchv1.ClusterFinchApp{}
		g.Expect(f.e.cached.Get(f.ctx, types.NamespacedName{Name: app.name}, got)).To(Succeed())
		g.Expect(got.Spec.Conditions[0].Namespaces).To(Equal([]string{"somewhere-else"}))
	}).Should(Succeed())

	p := get(t, browser, conn.Status.Session.ConnectURL)
	g.Expect(p.body).NotTo(Equal(inbound.PageConnected), "a namespace no longer admitted got a token")
	g.Expect(f.sim.Calls(finchsim.EndpointToken)).To(Equal(0), "the code was exchanged")
	err := f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: conn.TokenSecretName()}, &corev1.Secret{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "token Secret: %v", err)
}
