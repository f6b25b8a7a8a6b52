package index

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/testenv"
)

// TestLookupsThroughTheManagerCache checks the indexes the way the
// controllers and the inbound server use them (client.List from the
// manager's cache with InNamespace and MatchingFields) on a real API server:
// every index finds its connection in its namespace and nothing in another.
// It also pins the key format shared with controller-runtime's cache reader.
func TestLookupsThroughTheManagerCache(t *testing.T) {
	cfg := testenv.StartForTest(t)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: testenv.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := Setup(ctx, mgr, true); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	k8s := mgr.GetClient()

	// The same app, customer and IDs in two namespaces.
	for _, ns := range []string{"tenant-a", "tenant-b"} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*finchv1.FinchConnection{
			conn(ns, "acme", "acme-001", nil),
			conn(ns, "custom", "custom-001", &finchv1.LocalObjectReference{Name: "vault-token"}),
		} {
			if err := k8s.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			c.Status = finchv1.FinchConnectionStatus{ConnectionID: "conn-" + c.Name, CompanyID: "co-" + c.Name,
				AccountID: "acct-" + c.Name, Session: &finchv1.Session{ID: "sess-" + c.Name, ConnectURL: "https://connect.tryfinch.com/authorize?session=sess-" + c.Name,
					Kind: finchv1.SessionConnect, IssuedAt: metav1.Now(), ExpiresAt: metav1.NewTime(time.Now().Add(time.Hour))}}
			if err := k8s.Status().Update(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
	}

	// And a ClusterFinchApp "shared" used from both namespaces.
	for _, ns := range []string{"tenant-a", "tenant-b"} {
		c := conn(ns, "shared-"+ns, "globex-001", nil)
		c.Spec.AppRef = &finchv1.AppReference{Kind: finchv1.ClusterFinchAppKind, Name: "shared"}
		if err := k8s.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		c.Status = finchv1.FinchConnectionStatus{ConnectionID: "conn-" + c.Name}
		if err := k8s.Status().Update(ctx, c); err != nil {
			t.Fatal(err)
		}
	}

	app := types.NamespacedName{Namespace: "tenant-a", Name: "default"}
	shared := types.NamespacedName{Name: "shared"}
	cases := []struct {
		name string
		opts []client.ListOption
		want []string
	}{
		{"app", ForApp(app), []string{"acme", "custom"}},
		{"customer", ForAppValue(app, ConnectionCustomer, "acme-001"), []string{"acme"}},
		{"connection ID", ForAppValue(app, ConnectionID, "conn-acme"), []string{"acme"}},
		{"company ID", ForAppValue(app, ConnectionCompanyID, "co-custom"), []string{"custom"}},
		{"account ID", ForAppValue(app, ConnectionAccountID, "acct-acme"), []string{"acme"}},
		{"session", ForAppValue(app, ConnectionSession, "sess-custom"), []string{"custom"}},
		{"token Secret", []client.ListOption{client.InNamespace("tenant-a"), client.MatchingFields{ConnectionTokenSecret: "vault-token"}}, []string{"custom"}},
		// Default token Secret names are not indexed (DefaultTokenSecretOwner).
		{"default token Secret", []client.ListOption{client.InNamespace("tenant-a"), client.MatchingFields{ConnectionTokenSecret: "acme-finch-token"}}, nil},
		{"other app", ForAppValue(types.NamespacedName{Namespace: "tenant-a", Name: "other-app"}, ConnectionCustomer, "acme-001"), nil},
		// A ClusterFinchApp's connections: one customer_id space across
		// namespaces, and never a namespaced FinchApp's of the same name.
		{"cluster app", ForApp(shared), []string{"shared-tenant-a", "shared-tenant-b"}},
		{"cluster customer", ForAppValue(shared, ConnectionCustomer, "globex-001"), []string{"shared-tenant-a", "shared-tenant-b"}},
		{"cluster connection ID", ForAppValue(shared, ConnectionID, "conn-shared-tenant-b"), []string{"shared-tenant-b"}},
		{"FinchApp named like the cluster app", ForAppValue(types.NamespacedName{Namespace: "tenant-a", Name: "shared"}, ConnectionCustomer, "globex-001"), nil},
		{"cluster app named like the FinchApp", ForApp(types.NamespacedName{Name: "default"}), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			deadline := time.Now().Add(30 * time.Second)
			for {
				got, err := names(ctx, k8s, tc.opts)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) == fmt.Sprint(tc.want) {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("List(%v) = %v, want %v", tc.opts, got, tc.want)
				}
				time.Sleep(50 * time.Millisecond) // the cache catches up with the status writes
			}
		})
	}
}

func conn(ns, name, customer string, token *finchv1.LocalObjectReference) *finchv1.FinchConnection {
	return &finchv1.FinchConnection{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: finchv1.FinchConnectionSpec{CustomerID: customer, CustomerName: name,
			Products: []finchv1.Product{"company"}, TokenSecretRef: token},
	}
}

func names(ctx context.Context, c client.Client, opts []client.ListOption) ([]string, error) {
	list := &finchv1.FinchConnectionList{}
	if err := c.List(ctx, list, opts...); err != nil {
		return nil, err
	}
	var out []string
	for _, item := range list.Items {
		out = append(out, item.Name)
	}
	sort.Strings(out)
	return out, nil
}

func TestDefaultTokenSecretOwner(t *testing.T) {
	for secret, want := range map[string]string{
		"acme-finch-token": "acme",
		(&finchv1.FinchConnection{ObjectMeta: metav1.ObjectMeta{Name: "globex"}}).TokenSecretName(): "globex",
		"-finch-token":       "",
		"acme-finch-token-2": "",
		"vault-token":        "",
	} {
		if got := finchv1.DefaultTokenSecretOwner(secret); got != want {
			t.Errorf("DefaultTokenSecretOwner(%q) = %q, want %q", secret, got, want)
		}
	}
}

// BenchmarkIndexBytesPerConnection prints what the FinchConnection indexes
// cost per connected connection (all IDs set), against controller-runtime's
// IndexField, which files every value twice (namespace and all namespaces).
func BenchmarkIndexBytesPerConnection(b *testing.B) {
	const n = 10000
	measure := func(b *testing.B, doubled bool) float64 {
		indexers := toolscache.Indexers{}
		for _, i := range connectionIndexes {
			indexers[fieldIndexName(i.name)] = func(obj any) ([]string, error) {
				c := obj.(*finchv1.FinchConnection)
				var out []string
				for _, v := range i.fn(c) {
					out = append(out, namespacedKey(c.Namespace, v))
					if doubled {
						out = append(out, namespacedKey("__all_namespaces", v))
					}
				}
				return out, nil
			}
		}
		objs := make([]*finchv1.FinchConnection, n)
		for j := range objs {
			c := conn("tenant-a", fmt.Sprintf("employer-%05d", j), fmt.Sprintf("customer-%05d", j), nil)
			c.Status = finchv1.FinchConnectionStatus{ConnectionID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", j),
				CompanyID: fmt.Sprintf("%08d-1111-4000-8000-000000000000", j), AccountID: fmt.Sprintf("%08d-2222-4000-8000-000000000000", j),
				Session: &finchv1.Session{ID: fmt.Sprintf("%08d-3333-4000-8000-000000000000", j)}}
			objs[j] = c
		}
		store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{})
		for _, o := range objs {
			if err := store.Add(o); err != nil {
				b.Fatal(err)
			}
		}
		base := heapAfterGC()
		if err := store.AddIndexers(indexers); err != nil {
			b.Fatal(err)
		}
		with := heapAfterGC()
		runtime.KeepAlive(store)
		return float64(with-base) / n
	}
	for range b.N {
		ours, doubled := measure(b, false), measure(b, true)
		b.ReportMetric(ours, "B/conn")
		b.ReportMetric(doubled, "B/conn-doubled")
	}
}

func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
