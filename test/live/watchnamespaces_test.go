package live_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/pkg/finchsim"
	"github.com/connectops/finch-operator/test/live"
)

// TestWatchNamespaces runs the operator as a namespace-scoped install
// (--watch-namespaces) on a real API server: a connection in a watched
// namespace gets its Connect session; one in another namespace is left
// alone, with no status, no FinchApp status and no call to its Finch. A
// connection in a watched namespace whose appRef names a ClusterFinchApp is
// Stalled (ClusterAppUnavailable), even when that ClusterFinchApp exists.
func TestWatchNamespaces(t *testing.T) {
	env, err := live.StartWith(func(o *operator.Options) {
		o.Controllers.WatchNamespaces = []string{"tenant-watched"}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()

	watched, err := env.NewWorldIn(ctx, 2*time.Minute, "tenant-watched")
	if err != nil {
		t.Fatal(err)
	}
	defer watched.Close()
	other, err := env.NewWorldIn(ctx, 0, "tenant-other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, c := range []*finchv1.FinchConnection{other.Connection("acme", "acme-001"), watched.Connection("acme", "acme-001")} {
		if err := env.Client.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}

	err = live.Poll(ctx, 2*time.Minute, func() (bool, error) {
		c := &finchv1.FinchConnection{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: watched.Namespace, Name: "acme"}, c); err != nil {
			return false, err
		}
		return c.Status.Phase == finchv1.PhaseAwaitingConnect && c.Status.Session != nil, nil
	})
	if err != nil {
		t.Fatalf("the watched namespace's connection did not get its session: %v", err)
	}
	// The watched one was created after the other; give the operator a few
	// more seconds in which it would have acted on the other too.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		c := &finchv1.FinchConnection{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: other.Namespace, Name: "acme"}, c); err != nil {
			t.Fatal(err)
		}
		if c.Status.Phase != "" || len(c.Finalizers) > 0 {
			t.Fatalf("a connection outside --watch-namespaces was reconciled: phase %q, finalizers %v", c.Status.Phase, c.Finalizers)
		}
		app := &finchv1.FinchApp{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(other.App), app); err != nil {
			t.Fatal(err)
		}
		if meta.FindStatusCondition(app.Status.Conditions, finchv1.ConditionReady) != nil {
			t.Fatalf("a FinchApp outside --watch-namespaces got status: %+v", app.Status.Conditions)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := other.Sim.Calls("POST /connect/sessions") + other.Sim.Calls("POST /auth/token"); n != 0 {
		t.Errorf("the unwatched namespace's Finch got %d calls", n)
	}
	if n := watched.Sim.Calls("POST /connect/sessions"); n != 1 {
		t.Errorf("the watched namespace's Finch got %d session calls, want 1", n)
	}

	t.Run("ClusterFinchAppRefStalled", func(t *testing.T) {
		g := NewWithT(t)
		// A real ClusterFinchApp with a Finch of its own: the namespace-scoped
		// install must not read it, let alone call its Finch.
		sim := finchsim.New(finchsim.Options{})
		url := sim.Start()
		defer sim.Close()
		sim.AddApp(finchsim.AppConfig{ClientID: live.ClientID, ClientSecret: live.ClientSecret})
		shared := &finchv1.ClusterFinchApp{
			ObjectMeta: metav1.ObjectMeta{Name: "shared"},
			Spec: finchv1.ClusterFinchAppSpec{FinchAppSpec: finchv1.FinchAppSpec{
				APIURL:               url,
				CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "finch-credentials"},
				RedirectURI:          "https://operator.example.com/callback",
			}},
		}
		g.Expect(env.Client.Create(ctx, shared)).To(Succeed())
		sessionsBefore := watched.Sim.Calls("POST /connect/sessions")

		conn := watched.Connection("acme-shared", "acme-002")
		conn.Spec.AppRef = &finchv1.AppReference{Kind: finchv1.ClusterFinchAppKind, Name: shared.Name}
		g.Expect(env.Client.Create(ctx, conn)).To(Succeed())

		g.Eventually(func(g Gomega) {
			c := &finchv1.FinchConnection{}
			g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(conn), c)).To(Succeed())
			stalled := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionStalled)
			g.Expect(stalled).NotTo(BeNil(), "conditions: %+v", c.Status.Conditions)
			g.Expect(stalled.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(stalled.Reason).To(Equal(finchv1.ReasonClusterAppUnavailable))
			g.Expect(stalled.Message).To(And(
				ContainSubstring(`ClusterFinchApp "shared"`), ContainSubstring("namespace-scoped")))
			g.Expect(c.Status.Session).To(BeNil())
		}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

		g.Expect(sim.CallCounts()).To(BeEmpty(), "calls to the ClusterFinchApp's Finch")
		g.Expect(watched.Sim.Calls("POST /connect/sessions")).To(Equal(sessionsBefore),
			"session calls to the watched namespace's own Finch")
		got := &finchv1.ClusterFinchApp{}
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(shared), got)).To(Succeed())
		g.Expect(got.Status.Conditions).To(BeEmpty(), "the namespace-scoped install wrote ClusterFinchApp status")
	})
}
