package controllers_test

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// clusterWorld is one ClusterFinchApp (its Secret in the cluster resource
// namespace, its own simulator) and tenant namespaces that use it.
type clusterWorld struct {
	app      *finchv1.ClusterFinchApp
	sim      *finchsim.Sim
	clientID string
}

func newClusterWorld(mutate func(*finchv1.ClusterFinchApp)) *clusterWorld {
	sim := finchsim.New(finchsim.Options{})
	url := sim.Start()
	DeferCleanup(sim.Close)
	id := "cluster-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	sim.AddApp(finchsim.AppConfig{ClientID: id, ClientSecret: clientSecret})
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "finch-credentials-", Namespace: clusterResourceNamespace},
		StringData: map[string]string{"client_id": id, "client_secret": clientSecret}}
	Expect(k8sClient.Create(ctx, sec)).To(Succeed())
	app := &finchv1.ClusterFinchApp{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "platform-"},
		Spec: finchv1.ClusterFinchAppSpec{FinchAppSpec: finchv1.FinchAppSpec{
			APIURL:               url,
			CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: sec.Name},
			RedirectURI:          "https://operator.example.com/callback",
		}},
	}
	if mutate != nil {
		mutate(app)
	}
	Expect(k8sClient.Create(ctx, app)).To(Succeed())
	DeferCleanup(func() { _ = k8sClient.Delete(ctx, app) })
	return &clusterWorld{app: app, sim: sim, clientID: id}
}

// tenant is a namespace with the given labels whose connections use the
// world's ClusterFinchApp.
func (w *clusterWorld) tenant(labels map[string]string) *scenario {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "tenant-", Labels: labels}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return &scenario{ns: ns.Name, sim: w.sim}
}

func (w *clusterWorld) useApp(c *finchv1.FinchConnection) {
	c.Spec.AppRef = &finchv1.AppReference{Kind: finchv1.ClusterFinchAppKind, Name: w.app.Name}
}

func (w *clusterWorld) get() *finchv1.ClusterFinchApp {
	app := &finchv1.ClusterFinchApp{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(w.app), app)).To(Succeed())
	return app
}

var _ = Describe("ClusterFinchApp", func() {
	It("serves connections from the namespaces its conditions allow, and stalls the others without a Finch call", func() {
		w := newClusterWorld(func(a *finchv1.ClusterFinchApp) {
			a.Spec.Conditions = []finchv1.ClusterFinchAppCondition{
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"finch.example.com/tenant": "payroll"}}},
			}
		})
		byLabel := w.tenant(map[string]string{"finch.example.com/tenant": "payroll"})
		byName := w.tenant(nil)
		outsider := w.tenant(map[string]string{"finch.example.com/tenant": "marketing"})
		// Allow byName by name too (a second condition).
		Eventually(func() error {
			app := w.get()
			app.Spec.Conditions = append(app.Spec.Conditions, finchv1.ClusterFinchAppCondition{Namespaces: []string{byName.ns}})
			return k8sClient.Update(ctx, app)
		}).Should(Succeed())

		Eventually(func(g Gomega) {
			app := w.get()
			g.Expect(meta.IsStatusConditionTrue(app.Status.Conditions, finchv1.ConditionReady)).To(BeTrue(), "%v", app.Status.Conditions)
			g.Expect(app.Status.SecretNamespace).To(Equal(clusterResourceNamespace))
		}).Should(Succeed())
		// Its callback Secret is in the cluster resource namespace, not a tenant's.
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: clusterResourceNamespace, Name: w.app.Name + "-finch-cluster-callback"}, &corev1.Secret{})).To(Succeed())

		outsider.newConn("acme", "acme-001", w.useApp)
		byLabel.newConn("globex", "globex-001", w.useApp)
		byName.newConn("initech", "initech-001", w.useApp)
		byLabel.waitPhase("globex", finchv1.PhaseAwaitingConnect)
		c := byName.waitPhase("initech", finchv1.PhaseAwaitingConnect)

		stalled := outsider.waitCondition("acme", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonNamespaceNotAllowed)
		msg := meta.FindStatusCondition(stalled.Status.Conditions, finchv1.ConditionStalled).Message
		Expect(msg).To(ContainSubstring(fmt.Sprintf("ClusterFinchApp %q does not allow namespace %s", w.app.Name, outsider.ns)))
		Expect(msg).To(ContainSubstring("spec.conditions[0] allows namespaces labelled finch.example.com/tenant=payroll"))
		Expect(msg).To(ContainSubstring("spec.conditions[1] allows namespaces " + byName.ns))
		Expect(w.sim.Calls("POST /connect/sessions")).To(Equal(2), "one session per allowed connection, none for the outsider")
		Eventually(func(g Gomega) {
			g.Expect(outsider.events("acme")).To(ContainElement(finchv1.ReasonNamespaceNotAllowed))
		}).Should(Succeed())

		// The embedded hand-off works as with a FinchApp; the token stays in
		// the tenant's namespace.
		byName.handOverCode("initech", c.Status.Session.ID)
		byName.waitPhase("initech", finchv1.PhaseConnected)
		byName.tokenSecret("initech")

		// Counts per namespace, the busiest first and bounded.
		Eventually(func(g Gomega) {
			app := w.get()
			g.Expect(app.Status.Connections.Total).To(BeEquivalentTo(3))
			g.Expect(app.Status.Connections.Connected).To(BeEquivalentTo(1))
			g.Expect(app.Status.NamespaceCount).To(BeEquivalentTo(3))
			g.Expect(app.Status.Namespaces).To(HaveLen(3))
			i := slices.IndexFunc(app.Status.Namespaces, func(n finchv1.NamespaceConnectionCounts) bool { return n.Namespace == byName.ns })
			g.Expect(i).To(BeNumerically(">=", 0))
			g.Expect(app.Status.Namespaces[i].Connected).To(BeEquivalentTo(1))
		}).Should(Succeed())

		// Labelling the outsider's namespace admits it: the connection goes on.
		Eventually(func() error {
			ns := &corev1.Namespace{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: outsider.ns}, ns)).To(Succeed())
			ns.Labels["finch.example.com/tenant"] = "payroll"
			return k8sClient.Update(ctx, ns)
		}).Should(Succeed())
		outsider.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(w.sim.Calls("POST /connect/sessions")).To(Equal(3))

		// Narrowing the conditions stops it again, before any further call.
		Eventually(func() error {
			app := w.get()
			app.Spec.Conditions = app.Spec.Conditions[1:]
			return k8sClient.Update(ctx, app)
		}).Should(Succeed())
		outsider.waitCondition("acme", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonNamespaceNotAllowed)
		byLabel.waitCondition("globex", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonNamespaceNotAllowed)
		byName.waitPhase("initech", finchv1.PhaseConnected)
	})

	It("treats one customerID in two namespaces as one Finch customer", func() {
		w := newClusterWorld(nil) // no conditions: every namespace
		first, second := w.tenant(nil), w.tenant(nil)
		first.newConn("acme", "acme-001", w.useApp)
		first.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		second.newConn("acme", "acme-001", w.useApp)
		c := second.waitCondition("acme", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonDuplicateCustomerID)
		Expect(meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionStalled).Message).To(
			ContainSubstring(fmt.Sprintf("FinchConnection \"acme\" in namespace %s already uses customerID \"acme-001\" with ClusterFinchApp %q", first.ns, w.app.Name)))
		Expect(w.sim.Calls("POST /connect/sessions")).To(Equal(1))

		// The same customerID under a FinchApp in the second namespace is
		// another Finch application's customer: no conflict.
		own := newScenario()
		own.newConn("acme", "acme-001")
		own.waitPhase("acme", finchv1.PhaseAwaitingConnect)

		// Deleting the first lets the second proceed.
		Expect(k8sClient.Delete(ctx, first.get("acme"))).To(Succeed())
		second.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(w.sim.Calls("POST /connect/sessions")).To(Equal(2))
	})

	It("lets no namespace it does not admit squat on a customerID", func() {
		w := newClusterWorld(func(a *finchv1.ClusterFinchApp) {
			a.Spec.Conditions = []finchv1.ClusterFinchAppCondition{
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"finch.example.com/tenant": "payroll"}}},
			}
		})
		squatter := w.tenant(nil)
		admitted := w.tenant(map[string]string{"finch.example.com/tenant": "payroll"})
		// The outsider's connection is older, but it never reaches Finch, so
		// it does not hold the customerID against the admitted one.
		squatter.newConn("acme", "acme-001", w.useApp)
		squatter.waitCondition("acme", finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonNamespaceNotAllowed)
		admitted.newConn("acme", "acme-001", w.useApp)
		c := admitted.waitPhase("acme", finchv1.PhaseAwaitingConnect)
		Expect(meta.IsStatusConditionTrue(c.Status.Conditions, finchv1.ConditionStalled)).To(BeFalse(), "%v", c.Status.Conditions)
		Expect(w.sim.Calls("POST /connect/sessions")).To(Equal(1))
	})

	It("rejects a change of appRef.kind like any change of app", func() {
		s := newScenario()
		c := s.newConn("acme", "acme-001")
		Expect(c.Spec.AppRef).NotTo(BeNil())
		Expect(c.Spec.AppRef.Kind).To(Equal(finchv1.FinchAppKind), "the kind defaults to FinchApp")
		c.Spec.AppRef.Kind = finchv1.ClusterFinchAppKind
		err := k8sClient.Update(ctx, c)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("appRef is immutable"))
	})

	// One namespace's burst must not starve another's few: the budget's line
	// takes the namespaces in turn. FAIRNESS_BULK raises the burst for a
	// measurement (the figures are printed, not asserted as times).
	It("shares one app's budget fairly between namespaces", func() {
		bulkN := 200
		if v, err := strconv.Atoi(os.Getenv("FAIRNESS_BULK")); err == nil && v > 0 {
			bulkN = v
		}
		const smallN = 5
		const perWindow, window = 5, 2 * time.Second
		w := newClusterWorld(func(a *finchv1.ClusterFinchApp) {
			a.Spec.RateLimit = &finchv1.RateLimit{Requests: perWindow, Window: &metav1.Duration{Duration: window}}
		})
		w.sim.SetRateLimit(w.clientID, finchsim.RateLimit{Requests: perWindow, Window: window})
		bulk, small := w.tenant(nil), w.tenant(nil)
		DeferCleanup(func() {
			// No token, no finalizer: they go at once and stop calling Finch.
			for _, s := range []*scenario{bulk, small} {
				_ = k8sClient.DeleteAllOf(ctx, &finchv1.FinchConnection{}, client.InNamespace(s.ns))
			}
		})
		start := time.Now()
		for i := range bulkN {
			bulk.newConn(fmt.Sprintf("bulk-%05d", i), fmt.Sprintf("bulk-%05d", i), w.useApp)
		}
		smallStart := time.Now()
		for i := range smallN {
			small.newConn(fmt.Sprintf("small-%d", i), fmt.Sprintf("small-%d", i), w.useApp)
		}
		created := time.Since(start)
		issued := func(s *scenario) []time.Time {
			list := &finchv1.FinchConnectionList{}
			Expect(k8sClient.List(ctx, list, client.InNamespace(s.ns))).To(Succeed())
			var out []time.Time
			for _, c := range list.Items {
				if c.Status.Session != nil {
					out = append(out, c.Status.Session.IssuedAt.Time)
				}
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
			return out
		}
		Eventually(func() int { return len(issued(small)) }).WithTimeout(3 * time.Minute).Should(Equal(smallN))
		smallDone := time.Since(smallStart)
		last := issued(small)[smallN-1]
		// Sessions are stamped with the operator's clock, second precision.
		var before, between int
		for _, t := range issued(bulk) {
			switch {
			case t.Before(smallStart.Truncate(time.Second)):
				before++
			case !t.After(last):
				between++
			}
		}
		AddReportEntry("fairness", fmt.Sprintf(
			"ClusterFinchApp budget %d/%s; %d connections in one namespace, then %d in another (all created in %s). "+
				"When the %d were created the bulk namespace had %d sessions; %d more bulk sessions were issued before the %d-th of the small namespace, %s after its creation (FIFO: %d more, about %s)",
			perWindow, window, bulkN, smallN, created.Round(time.Millisecond), smallN, before, between, smallN, smallDone.Round(time.Millisecond),
			bulkN-before, (time.Duration(bulkN-before+smallN)*window/perWindow).Round(time.Second)))
		// Round robin gives the small namespace every other slot, after the
		// bulk passes already waiting for a slot within the blocking limit
		// (5 s, so about a dozen at this rate).
		Expect(between).To(BeNumerically("<", min(50, (bulkN-before)/2)), "the small namespace waited behind the bulk one")
	})
})
