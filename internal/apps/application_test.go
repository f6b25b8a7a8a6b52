package apps

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/budgetstore"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/scheme"
)

const testAPI = "https://finch.example.com"

type registryWorld struct {
	t     *testing.T
	c     client.Client
	r     *Registry
	woken []types.NamespacedName
}

func newRegistryWorld(t *testing.T) *registryWorld {
	w := &registryWorld{t: t, c: fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()}
	w.r = &Registry{Reader: w.c, Writer: w.c, ClusterResourceNamespace: "finch-system", APIHosts: finch.MustParseAPIHosts("finch.example.com"),
		Notify: func(k types.NamespacedName) { w.woken = append(w.woken, k) }}
	return w
}

// app creates a FinchApp ns/default (a ClusterFinchApp name when ns is "")
// whose credentials Secret holds clientID and secret, and loads it.
func (w *registryWorld) app(ns, name, clientID, secret string, rl *finchv1.RateLimit) (finchv1.AppObject, *App) {
	w.t.Helper()
	spec := finchv1.FinchAppSpec{APIURL: testAPI, CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: name + "-creds"}, RateLimit: rl}
	var app finchv1.AppObject = &finchv1.FinchApp{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1}, Spec: spec}
	secretNS := ns
	if ns == "" {
		app = &finchv1.ClusterFinchApp{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1}, Spec: finchv1.ClusterFinchAppSpec{FinchAppSpec: spec}}
		secretNS = w.r.ClusterResourceNamespace
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: secretNS, Name: name + "-creds"},
		Data: map[string][]byte{"client_id": []byte(clientID), "client_secret": []byte(secret)}}
	if err := w.c.Create(context.Background(), sec); err != nil {
		w.t.Fatal(err)
	}
	return app, w.load(app)
}

func (w *registryWorld) load(app finchv1.AppObject) *App {
	w.t.Helper()
	a, err := w.r.Load(context.Background(), app)
	if err != nil {
		w.t.Fatal(err)
	}
	return a
}

func rateLimit(n int32, d time.Duration) *finchv1.RateLimit {
	return &finchv1.RateLimit{Requests: n, Window: &metav1.Duration{Duration: d}}
}

// Apps with the same apiURL and client_id share one budget and journal,
// whatever their kind and namespace; the strictest rateLimit applies; a wrong
// secret latches only itself.
func TestRegistrySharesTheFinchApplication(t *testing.T) {
	w := newRegistryWorld(t)
	_, a := w.app("team-a", "default", "client-1", "right", rateLimit(20, time.Minute))
	bObj, b := w.app("team-b", "default", "client-1", "mistyped", rateLimit(30, time.Minute))
	_, c := w.app("", "platform", "client-1", "right", nil)
	_, other := w.app("team-a", "other", "client-2", "right", nil)

	if a.ApplicationID != ApplicationID(testAPI+"/", "client-1") || a.ApplicationID != b.ApplicationID || c.ApplicationID != a.ApplicationID {
		t.Fatalf("application IDs %s %s %s: want one for apiURL and client_id", a.ApplicationID, b.ApplicationID, c.ApplicationID)
	}
	if a.Budget != b.Budget || a.Budget != c.Budget || other.Budget == a.Budget || other.ApplicationID == a.ApplicationID {
		t.Fatal("one budget per Finch application")
	}
	if got := a.Budget.Config(); got != (budget.Config{Requests: 20, Window: time.Minute}) {
		t.Errorf("budget in effect %+v, want the strictest (20 per minute; the default is 20 per minute too)", got)
	}
	s, ok := w.r.Sharing(b.Key)
	want := []types.NamespacedName{{Name: "platform"}, {Namespace: "team-a", Name: "default"}}
	if !ok || s.ID != a.ApplicationID || !slices.Equal(s.Others, want) || s.Declared.Requests != 30 || s.InEffect.Requests != 20 ||
		s.BudgetConfigMap != budgetstore.ApplicationConfigMapName(a.ApplicationID) {
		t.Errorf("Sharing(team-b) = %+v, %v", s, ok)
	}
	if !slices.Contains(w.woken, a.Key) || !slices.Contains(w.woken, b.Key) {
		t.Errorf("woken %v: the apps already there must learn of the newcomers", w.woken)
	}

	// The budget's claims go to the application's ConfigMap in the cluster
	// resource namespace.
	if err := a.Budget.Wait(context.Background(), finch.EndpointCreateSession); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{}
	if err := w.c.Get(context.Background(), types.NamespacedName{Namespace: "finch-system", Name: s.BudgetConfigMap}, cm); err != nil {
		t.Fatalf("budget ConfigMap: %v", err)
	}
	if cm.Labels[budgetstore.ApplicationLabel] != a.ApplicationID || len(cm.OwnerReferences) != 0 {
		t.Errorf("budget ConfigMap labels %v owners %v", cm.Labels, cm.OwnerReferences)
	}

	// invalid_client for the mistyped secret latches it alone; an app with
	// the same mistake is latched from the start.
	b.RejectCredentials()
	if a.CredentialsRejected() || c.CredentialsRejected() || !b.CredentialsRejected() {
		t.Fatal("the latch must be per (application, secret)")
	}
	_, d := w.app("team-c", "default", "client-1", "mistyped", nil)
	if !d.CredentialsRejected() {
		t.Error("a second app with the rejected secret must not call Finch to learn it again")
	}
	// A change to the latched app (its Secret fixed, or re-applied) lets it
	// try again.
	bObj.SetGeneration(2)
	if b2 := w.load(bObj); b2.CredentialsRejected() {
		t.Error("a changed app must be allowed one more try")
	}

	// A stricter newcomer tightens the budget; its leaving loosens it again.
	w.woken = nil
	e, _ := w.app("team-d", "default", "client-1", "right", rateLimit(10, 2*time.Minute))
	if got := a.Budget.Config(); got != (budget.Config{Requests: 10, Window: 2 * time.Minute}) {
		t.Errorf("budget in effect %+v, want 10 per 2m", got)
	}
	w.r.Forget(finchv1.AppKeyOf(e))
	if got := a.Budget.Config(); got != (budget.Config{Requests: 20, Window: time.Minute}) {
		t.Errorf("budget in effect after the strict app left %+v, want 20 per minute", got)
	}
	if s, _ := w.r.Sharing(a.Key); len(s.Others) != 3 {
		t.Errorf("team-a shares with %v, want team-b, team-c and the ClusterFinchApp", s.Others)
	}
	if !slices.Contains(w.woken, a.Key) {
		t.Errorf("woken %v: the apps left must learn who went", w.woken)
	}
}

func TestApplicationIDNormalizesAPIURL(t *testing.T) {
	id := ApplicationID("", "c")
	for _, u := range []string{"https://api.tryfinch.com", "https://API.tryfinch.com/", "HTTPS://api.tryfinch.com"} {
		if got := ApplicationID(u, "c"); got != id {
			t.Errorf("ApplicationID(%q) = %s, want %s (the default API)", u, got, id)
		}
	}
	if ApplicationID("https://sandbox.example.com", "c") == id || ApplicationID("", "d") == id {
		t.Error("another host or client_id is another application")
	}
}
