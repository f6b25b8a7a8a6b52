package inbound_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/inbound"
)

// The callback's code exchange is admitted by the app like the reconcilers'
// calls (apps.App.Admit): when the app's token budget has no slot for a
// long time, the employer is told at once when to retry (429 with
// Retry-After) instead of being kept waiting for a Finch call that cannot
// start, and nothing is sent to Finch.
func TestCallbackExchangeAdmittedByTheAppsBudget(t *testing.T) {
	f := newFixture(t)
	g := f.g
	f.createApp("tight", nil)
	for _, name := range []string{"first", "second"} {
		f.newConnection(name, name, func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "tight"} })
	}
	first, second := f.waitSession("first", finchv1.SessionConnect), f.waitSession("second", finchv1.SessionConnect)

	// One code exchange an hour from now on.
	g.Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		a := &finchv1.FinchApp{}
		if err := f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "tight"}, a); err != nil {
			return err
		}
		a.Spec.RateLimit = &finchv1.RateLimit{Requests: 1, Window: &metav1.Duration{Duration: time.Hour}}
		return f.e.k8s.Update(f.ctx, a)
	})).To(Succeed())
	g.Eventually(func(g Gomega) {
		a := &finchv1.FinchApp{}
		g.Expect(f.e.k8s.Get(f.ctx, types.NamespacedName{Namespace: f.ns, Name: "tight"}, a)).To(Succeed())
		g.Expect(a.Status.ObservedGeneration).To(Equal(a.Generation))
	}).Should(Succeed())

	p := get(t, browser, first.Status.Session.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusOK), p.body)
	g.Expect(p.body).To(Equal(inbound.PageConnected))

	p = get(t, browser, second.Status.Session.ConnectURL)
	g.Expect(p.status).To(Equal(http.StatusTooManyRequests), p.body)
	secs, err := strconv.Atoi(p.header.Get("Retry-After"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(secs).To(BeNumerically(">", 50*60), "retry when the hour's slot frees")
	g.Expect(f.sim.Calls("POST /auth/token")).To(Equal(1), "the refused exchange was not sent")
}
