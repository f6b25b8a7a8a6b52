package secretnames

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

const label = "finch.connectops.dev/connection"

func secret(ns, name, rv string, labelled bool) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: rv}}
	if labelled {
		m.Labels = map[string]string{label: "acme"}
	}
	return m
}

// noWatchList makes the reflector list then watch (the fake serves no
// watch-list stream).
type noWatchList struct{ *toolscache.ListWatch }

func (noWatchList) IsWatchListSemanticsUnSupported() bool { return true }

func fakeLW(w *watch.FakeWatcher, items ...metav1.PartialObjectMetadata) toolscache.ListerWatcher {
	return noWatchList{&toolscache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (k8sruntime.Object, error) {
			return &metav1.PartialObjectMetadataList{ListMeta: metav1.ListMeta{ResourceVersion: "10"}, Items: items}, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) { return w, nil },
	}}
}

func TestIndexFollowsSecrets(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := watch.NewFakeWithChanSize(10, false)
	x := NewWithListerWatcher(fakeLW(w, *secret("a", "creds", "1", false), *secret("a", "acme-finch-token", "2", true)), label)
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	var events []Event
	src := x.Source(func(_ context.Context, e Event) []reconcile.Request {
		events = append(events, e)
		return []reconcile.Request{{NamespacedName: e.Key}}
	})
	if err := src.Start(ctx, q); err != nil {
		t.Fatal(err)
	}
	go func() { _ = x.Start(ctx) }()
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := x.WaitForSync(sctx); err != nil {
		t.Fatal(err)
	}
	if x.Len() != 2 {
		t.Fatalf("Len %d after the initial list, want 2", x.Len())
	}
	got := &metav1.PartialObjectMetadata{}
	if err := x.Get(ctx, types.NamespacedName{Namespace: "a", Name: "creds"}, got); err != nil || got.Name != "creds" || got.Namespace != "a" {
		t.Errorf("Get an existing Secret: %v %+v", err, got.ObjectMeta)
	}
	err := x.Get(ctx, types.NamespacedName{Namespace: "a", Name: "missing"}, &metav1.PartialObjectMetadata{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("Get a missing Secret: %v, want NotFound", err)
	}

	// The reflector's part is covered against a real API server (the
	// controllers' suite); from here the test plays the reflector.
	cancel()
	st := x.stores[""]
	// Live events reach the controller's queue; the initial list is not replayed.
	if err := st.Add(secret("b", "migrated", "11", false)); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(toolscache.DeletedFinalStateUnknown{Key: "a/creds", Obj: secret("a", "creds", "12", false)}); err != nil {
		t.Fatal(err)
	}
	if q.Len() != 2 || len(events) != 2 {
		t.Fatalf("queue holds %d, events %v; want the add and the delete", q.Len(), events)
	}
	if events[0] != (Event{Key: types.NamespacedName{Namespace: "b", Name: "migrated"}}) || events[1].Key.Name != "creds" {
		t.Errorf("events %v", events)
	}
	if err := x.Get(ctx, types.NamespacedName{Namespace: "a", Name: "creds"}, &metav1.PartialObjectMetadata{}); !apierrors.IsNotFound(err) {
		t.Errorf("deleted Secret still found: %v", err)
	}

	// A relist (the watch lost its place) delivers what changed meanwhile.
	events = nil
	if err := st.Replace([]any{secret("a", "acme-finch-token", "20", true), secret("c", "new", "21", false)}, "21"); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, e := range events {
		keys[e.Key.String()] = e.Labelled
	}
	if _, gone := keys["b/migrated"]; !gone || len(keys) != 2 {
		t.Errorf("relist events %v, want b/migrated (gone) and c/new (new), not the unchanged token Secret", events)
	}
	if _, ok := keys["a/acme-finch-token"]; ok {
		t.Errorf("an unchanged Secret produced an event on relist: %v", events)
	}
}

// BenchmarkIndexBytesPerSecret prints the heap one Secret of another
// workload costs the operator (the busy-cluster goal is <= 0.5 KiB).
func BenchmarkIndexBytesPerSecret(b *testing.B) {
	const n = 20000
	for range b.N {
		x := NewWithListerWatcher(nil, label)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		list := make([]any, n)
		for i := range list {
			list[i] = secret(fmt.Sprintf("busy-%03d", i%200), fmt.Sprintf("workload-%05d", i), "1", false)
		}
		if err := x.stores[""].Replace(list, "1"); err != nil {
			b.Fatal(err)
		}
		list = nil //nolint:ineffassign,wastedassign // the decoded objects are garbage once indexed
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/secret")
		runtime.KeepAlive(x)
	}
}

// With namespaces (--watch-namespaces), each namespace has its own list and
// watch: the Index is synced once all are, and one namespace's relist leaves
// the others' Secrets alone.
func TestIndexPerNamespace(t *testing.T) {
	x := newIndex(map[string]toolscache.ListerWatcher{"a": nil, "b": nil}, label)
	if err := x.stores["a"].Replace([]any{secret("a", "creds", "1", false)}, "1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-x.synced:
		t.Fatal("synced with one of two namespaces listed")
	default:
	}
	if err := x.stores["b"].Replace([]any{secret("b", "creds", "2", false), secret("b", "token", "3", true)}, "3"); err != nil {
		t.Fatal(err)
	}
	if err := x.WaitForSync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := x.stores["a"].Replace([]any{secret("a", "other", "4", false)}, "4"); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{"a/creds": false, "a/other": true, "b/creds": true, "b/token": true} {
		ns, name, _ := strings.Cut(key, "/")
		err := x.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &metav1.PartialObjectMetadata{})
		if got := err == nil; got != want {
			t.Errorf("%s known = %v, want %v (err %v)", key, got, want, err)
		}
	}
}
