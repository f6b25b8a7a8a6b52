package controllers_test

import (
	"net/http"
	"net/http/httptest"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// eventMessages are the messages of the Events with reason recorded on the
// object name of the scenario's namespace.
func (s *scenario) eventMessages(name, reason string) []string {
	list := &corev1.EventList{}
	Expect(k8sClient.List(ctx, list, client.InNamespace(s.ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name && e.Reason == reason {
			out = append(out, e.Type+": "+e.Message)
		}
	}
	return out
}

func (s *scenario) appCounts() finchv1.ConnectionCounts {
	app := &finchv1.FinchApp{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s.app), app)).To(Succeed())
	return app.Status.Connections
}

var _ = Describe("FinchApp connection counts after a delete", func() {
	// make demo showed CONNECTIONS 3 and CONNECTED 3 with two connections
	// left: a connection being deleted was still counted, and the start of its
	// deletion did not trigger a recount.
	It("drop as soon as a connection's deletion starts, not when its finalizers are done", func() {
		const hold = "example.com/hold" // another controller's finalizer keeps it Terminating
		s := newScenario()
		s.newConn("acme", "acme-001")
		s.newConn("globex", "globex-001")
		s.newConn("initech", "initech-001", func(c *finchv1.FinchConnection) { c.Finalizers = []string{hold} })
		for _, n := range []string{"acme", "globex", "initech"} {
			s.waitPhase(n, finchv1.PhaseAwaitingConnect)
		}
		Eventually(s.appCounts).Should(Equal(finchv1.ConnectionCounts{Total: 3, AwaitingConnect: 3}))

		Expect(k8sClient.Delete(ctx, s.get("initech"))).To(Succeed())
		Eventually(s.appCounts).Should(Equal(finchv1.ConnectionCounts{Total: 2, AwaitingConnect: 2}))
		Expect(s.get("initech").DeletionTimestamp).NotTo(BeNil(), "still there, Terminating, and no longer counted")

		// Gone for good: the count stays; and a plain delete counts as well.
		c := s.get("initech")
		patch := client.MergeFrom(c.DeepCopy())
		controllerutil.RemoveFinalizer(c, hold)
		Expect(k8sClient.Patch(ctx, c, patch)).To(Succeed())
		Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)) }).Should(BeTrue())
		s.deleteAndWait("globex")
		Eventually(s.appCounts).Should(Equal(finchv1.ConnectionCounts{Total: 1, AwaitingConnect: 1}))
	})

	It("drop for a Connected connection deleted with deletionPolicy Disconnect", func() {
		s := newScenario()
		s.connect("acme", "acme-001")
		s.connect("initech", "initech-001", func(c *finchv1.FinchConnection) { c.Spec.DeletionPolicy = finchv1.DeletionPolicyDisconnect })
		Eventually(s.appCounts).Should(Equal(finchv1.ConnectionCounts{Total: 2, Connected: 2}))
		s.deleteAndWait("initech")
		Expect(s.calls(epDisconnect)).To(Equal(1))
		Eventually(s.appCounts).Should(Equal(finchv1.ConnectionCounts{Total: 1, Connected: 1}))
	})
})

var _ = Describe("FinchApp spec warnings", func() {
	It("reads the deprecated spec.apiVersion when finchAPIVersion is empty, sends it to Finch and warns with a DeprecatedField Event", func() {
		s := newScenario()
		// A recording front of the scenario's simulator (127.0.0.1, an allowed host).
		var mu sync.Mutex
		var versions []string
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			versions = append(versions, r.Header.Get("Finch-API-Version"))
			mu.Unlock()
			s.sim.Handler().ServeHTTP(w, r)
		}))
		DeferCleanup(front.Close)
		legacy := &finchv1.FinchApp{
			ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: s.ns},
			Spec: finchv1.FinchAppSpec{APIURL: front.URL, DeprecatedAPIVersion: "2021-06-01",
				CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "finch-credentials"}},
		}
		Expect(k8sClient.Create(ctx, legacy)).To(Succeed())
		s.newConn("acme", "acme-001", func(c *finchv1.FinchConnection) {
			c.Spec.AppRef = &finchv1.AppReference{Name: "legacy"}
			c.Spec.ConnectFlow = finchv1.ConnectFlowEmbedded
		})
		s.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		mu.Lock()
		Expect(versions).NotTo(BeEmpty())
		Expect(versions).To(HaveEach("2021-06-01"))
		mu.Unlock()

		Eventually(func() []string { return s.eventMessages("legacy", finchv1.ReasonDeprecatedField) }).Should(ConsistOf(
			"Warning: spec.apiVersion is deprecated; rename it to spec.finchAPIVersion (its value, 2021-06-01, is used while spec.finchAPIVersion is empty)"))
		Expect(s.eventMessages("default", finchv1.ReasonDeprecatedField)).To(BeEmpty(), "an app without the old field is not warned")

		// Renamed: the new name wins, and no new warning for the new generation.
		Eventually(func() error {
			app := &finchv1.FinchApp{}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(legacy), app)).To(Succeed())
			app.Spec.DeprecatedAPIVersion, app.Spec.FinchAPIVersion = "", "2022-02-02"
			return k8sClient.Update(ctx, app)
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			app := &finchv1.FinchApp{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(legacy), app)).To(Succeed())
			g.Expect(app.Status.ObservedGeneration).To(Equal(app.Generation))
		}).Should(Succeed())
		s.annotate("acme", finchv1.RequestedAtAnnotation, "after-rename")
		Eventually(func() string {
			mu.Lock()
			defer mu.Unlock()
			return versions[len(versions)-1]
		}).Should(Equal("2022-02-02"))
		Expect(s.eventMessages("legacy", finchv1.ReasonDeprecatedField)).To(HaveLen(1))
	})

	It("warns with an InsecureAPIURL Event while insecureAPIURL lets the credentials travel in clear text", func() {
		s := newScenario()
		app := &finchv1.FinchApp{
			ObjectMeta: metav1.ObjectMeta{Name: "insecure", Namespace: s.ns},
			Spec: finchv1.FinchAppSpec{APIURL: "http://finch-sim.test:8090", InsecureAPIURL: true,
				CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "finch-credentials"}},
		}
		Expect(k8sClient.Create(ctx, app)).To(Succeed())
		Eventually(func() []string { return s.eventMessages("insecure", finchv1.ReasonInsecureAPIURL) }).Should(ConsistOf(
			ContainSubstring("Warning: spec.insecureAPIURL is true and spec.apiURL is http:// to finch-sim.test:8090: the client secret and access tokens cross the network in clear text")))
		// The host allow-list still applies: the operator calls only 127.0.0.1 here.
		Eventually(func(g Gomega) {
			got := &finchv1.FinchApp{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(app), got)).To(Succeed())
			g.Expect(meta.FindStatusCondition(got.Status.Conditions, finchv1.ConditionStalled)).To(HaveField("Reason", finchv1.ReasonAPIHostNotAllowed))
		}).Should(Succeed())
		Expect(s.eventMessages("default", finchv1.ReasonInsecureAPIURL)).To(BeEmpty(), "a loopback http:// apiURL is not warned about")
	})
})
