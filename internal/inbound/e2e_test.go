package inbound_test

import (
	"net/http"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// The employer follows the Connect link; Finch redirects the browser to the
// callback; the operator stores the token and the connection gets Connected.
// Then Finch reports reauth by webhook; the controller publishes a reauth
// session; the employer completes it through the callback again; a new token
// replaces the old one for the same connection.
func TestRedirectFlowAndWebhookReauth(t *testing.T) {
	f := newFixture(t)
	g := f.g

	f.newConnection("acme", "acme", nil)
	conn := f.waitSession("acme", finchv1.SessionConnect)
	g.Expect(conn.Status.Phase).To(Equal(finchv1.PhaseAwaitingConnect))

	// The employer's browser: Connect page -> 302 -> our callback.
	p := get(t, browser, conn.Status.Session.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusOK), p.body)
	g.Expect(p.finalURL).To(HavePrefix(f.callbackURL(f.app) + "?code="))
	g.Expect(p.body).To(ContainSubstring("Connected — you can close this window"))
	g.Expect(p.header.Get("Cache-Control")).To(Equal("no-store"))
	g.Expect(p.header.Get("Referrer-Policy")).To(Equal("no-referrer"))

	conn, token := f.waitConnected("acme")
	g.Expect(p.body).NotTo(ContainSubstring(token))
	simConns := f.sim.Connections()
	g.Expect(simConns).To(HaveLen(1))
	connID := simConns[0].ID
	g.Expect(conn.Status.ConnectionID).To(Equal(connID))
	g.Expect(conn.Status.ConnectionStatus.Status).To(Equal("connected"))
	// The pass that first sees the token adds the finalizer; that write must
	// not cost the status it built (it once dropped tokenSecretRef).
	g.Expect(conn.Status.TokenSecretRef).NotTo(BeNil(), "Connected names the token Secret")
	g.Expect(conn.Status.TokenSecretRef.Name).To(Equal("acme-finch-token"))
	g.Expect(conn.Finalizers).To(ContainElement(finchv1.Finalizer))
	sec := &corev1.Secret{}
	g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "acme-finch-token"}, sec)).To(Succeed())
	g.Expect(metav1.IsControlledBy(sec, conn)).To(BeTrue())
	g.Eventually(func(g Gomega) {
		evs := f.events(g, "FinchConnection", "acme", finchv1.ReasonTokenStored)
		g.Expect(evs).NotTo(BeEmpty())
		g.Expect(evs[0].Note).To(ContainSubstring("acme-finch-token"))
		g.Expect(evs[0].Note).NotTo(ContainSubstring(token))
	}).Should(Succeed())

	// Finch flips the connection to reauth and sends a signed webhook.
	f.quiet()
	start := time.Now()
	g.Expect(f.sim.SetConnectionStatus(connID, "reauth")).To(Succeed())
	var latency time.Duration
	g.Eventually(func(g Gomega) {
		c := &finchv1.FinchConnection{}
		g.Expect(f.e.cached.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "acme"}, c)).To(Succeed())
		g.Expect(c.Status.Session).NotTo(BeNil())
		g.Expect(c.Status.Session.Kind).To(Equal(finchv1.SessionReauthenticate))
		g.Expect(c.Status.Phase).To(Equal(finchv1.PhaseReauthRequired))
		latency = time.Since(start)
	}).WithPolling(2 * time.Millisecond).Should(Succeed())
	t.Logf("webhook -> reauth session in status: %v", latency)
	g.Expect(f.sim.WebhookDeliveries()).To(Equal(1))

	conn = f.waitSession("acme", finchv1.SessionReauthenticate)
	g.Expect(conn.Annotations[finchv1.WebhookStatusAnnotation]).To(Equal("reauth"))
	g.Expect(conn.Status.LastHandledWebhookEvent).To(Equal(conn.Annotations[finchv1.WebhookEventAnnotation]))

	// The employer completes the reauth session through the callback.
	p = get(t, browser, conn.Status.Session.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusOK), p.body)
	g.Expect(p.body).To(Equal(inbound.PageConnected))
	conn, newToken := f.waitConnected("acme")
	g.Expect(newToken).NotTo(Equal(token))
	g.Expect(p.body).NotTo(ContainSubstring(newToken))
	g.Expect(conn.Status.ConnectionID).To(Equal(connID))
	g.Expect(f.sim.Calls("POST /connect/sessions/reauthenticate")).To(Equal(1))
	g.Expect(f.sim.Calls("POST /disconnect")).To(Equal(0))
	info, _ := f.sim.Connection(connID)
	g.Expect(info.Tokens).To(Equal(1), "reauth revoked the old token")
}

// The embedded flow: the customer's backend hands the code over in a Secret.
func TestEmbeddedFlow(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.newConnection("globex", "globex", nil)
	conn := f.waitSession("globex", finchv1.SessionConnect)
	code, err := f.sim.CompleteSession(conn.Status.Session.ID, finchsim.Completion{})
	g.Expect(err).NotTo(HaveOccurred())
	f.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "globex-code",
			Labels: map[string]string{finchv1.ConnectionLabel: "globex"}},
		Type: finchv1.CodeSecretType,
		Data: map[string][]byte{finchv1.CodeKey: []byte(code)},
	})
	conn, _ = f.waitConnected("globex")
	g.Eventually(func() bool {
		err := f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "globex-code"}, &corev1.Secret{})
		return apierrors.IsNotFound(err)
	}).Should(BeTrue(), "the code Secret is deleted")
	g.Expect(conn.Status.ConnectionID).To(Equal(f.sim.Connections()[0].ID))
	g.Expect(f.sim.Calls("POST /auth/token")).To(Equal(1))
}
