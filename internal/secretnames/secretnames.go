// Package secretnames knows the name of every Secret in the cluster at about
// 100 bytes each. The operator needs that for Secrets that carry no label of
// its own: FinchApp credentials and migrated token Secrets. A watch on
// Secret metadata feeds a set of keys (not a cache of objects), so the
// Secrets of every other workload in a busy cluster cost the operator almost
// nothing, and the watch makes no reads after its initial list.
package secretnames

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

var secrets = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// Event is a Secret that appeared, changed or went away.
type Event struct {
	Key types.NamespacedName
	// Labelled says whether it carries the label Index was made for.
	Labelled bool
}

// Index is the set of Secret keys. It is a manager Runnable, a
// client.Reader for Get (existence only), and the source of controller events.
type Index struct {
	label  string
	lws    map[string]toolscache.ListerWatcher // by namespace ("": all)
	stores map[string]*store                   // the reflectors' stores, by namespace

	mu       sync.RWMutex
	keys     map[string]bool // "namespace/name" -> carries label
	handlers []func(Event)
	synced   chan struct{}
	pending  int // namespaces whose initial list is not in yet
	started  atomic.Bool
}

// New returns an Index of every Secret in namespaces (none: the whole
// cluster), remembering whether each carries label. With namespaces it lists
// and watches each of them, so it needs no cluster-wide access to Secrets.
func New(cfg *rest.Config, httpClient *http.Client, label string, namespaces ...string) (*Index, error) {
	mc, err := metadata.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("metadata client: %w", err)
	}
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	lws := map[string]toolscache.ListerWatcher{}
	for _, ns := range namespaces {
		ri := mc.Resource(secrets).Namespace(ns)
		lws[ns] = toolscache.ToListWatcherWithWatchListSemantics(&toolscache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return ri.List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return ri.Watch(ctx, o)
			},
		}, ri)
	}
	return newIndex(lws, label), nil
}

// NewWithListerWatcher is New with another source of Secret metadata (all
// namespaces).
func NewWithListerWatcher(lw toolscache.ListerWatcher, label string) *Index {
	return newIndex(map[string]toolscache.ListerWatcher{metav1.NamespaceAll: lw}, label)
}

func newIndex(lws map[string]toolscache.ListerWatcher, label string) *Index {
	x := &Index{label: label, lws: lws, stores: map[string]*store{}, keys: map[string]bool{}, synced: make(chan struct{}), pending: len(lws)}
	for ns := range lws {
		x.stores[ns] = &store{x: x, ns: ns}
	}
	return x
}

// Start runs the watches until ctx ends (manager.Runnable).
func (x *Index) Start(ctx context.Context) error {
	if !x.started.CompareAndSwap(false, true) {
		return errors.New("secretnames: already started")
	}
	var wg sync.WaitGroup
	for ns, lw := range x.lws {
		wg.Go(func() {
			r := toolscache.NewReflectorWithOptions(lw, &metav1.PartialObjectMetadata{}, x.stores[ns],
				toolscache.ReflectorOptions{Name: "secret names " + ns})
			r.RunWithContext(ctx)
		})
	}
	wg.Wait()
	return nil
}

// NeedLeaderElection is false: every replica's inbound server and cache need it.
func (x *Index) NeedLeaderElection() bool { return false }

// WaitForSync blocks until the initial list is in (or ctx ends).
func (x *Index) WaitForSync(ctx context.Context) error {
	select {
	case <-x.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("secret names not synced: %w", ctx.Err())
	}
}

// Len is how many Secrets the Index knows.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.keys)
}

// Get answers whether a Secret exists: obj (a PartialObjectMetadata) gets
// its name and namespace, or the error is NotFound.
func (x *Index) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	x.mu.RLock()
	labelled, ok := x.keys[key.Namespace+"/"+key.Name]
	x.mu.RUnlock()
	if !ok {
		return apierrors.NewNotFound(secrets.GroupResource(), key.Name)
	}
	obj.SetNamespace(key.Namespace)
	obj.SetName(key.Name)
	if labelled {
		obj.SetLabels(map[string]string{x.label: ""})
	}
	return nil
}

// List is not supported: the Index holds keys, not objects.
func (x *Index) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("secretnames: List is not supported")
}

// Source delivers the Index's live events, mapped by m, to a controller. It
// replays nothing at start: the controllers' own initial lists cover the
// objects these events would wake. The controller waits for the Index to sync.
func (x *Index) Source(m func(context.Context, Event) []reconcile.Request) source.Source {
	return &eventSource{x: x, m: m}
}

type eventSource struct {
	x *Index
	m func(context.Context, Event) []reconcile.Request
}

func (s *eventSource) Start(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	s.x.mu.Lock()
	s.x.handlers = append(s.x.handlers, func(e Event) {
		for _, r := range s.m(ctx, e) {
			q.Add(r)
		}
	})
	s.x.mu.Unlock()
	return nil
}

func (s *eventSource) WaitForSync(ctx context.Context) error { return s.x.WaitForSync(ctx) }

func (s *eventSource) String() string { return "secret names" }

// store is the Index as one namespace's reflector store ("": all).
type store struct {
	x      *Index
	ns     string
	synced bool // its initial list is in (guarded by x.mu)
}

func (s *store) labelled(obj any) (string, bool, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return "", false, fmt.Errorf("secretnames: unexpected %T", obj)
	}
	_, l := m.Labels[s.x.label]
	return m.Namespace + "/" + m.Name, l, nil
}

func (s *store) set(obj any) error {
	key, l, err := s.labelled(obj)
	if err != nil {
		return err
	}
	x := s.x
	x.mu.Lock()
	x.keys[key] = l
	hs := x.handlers
	x.mu.Unlock()
	emit(hs, key, l)
	return nil
}

func (s *store) Add(obj any) error    { return s.set(obj) }
func (s *store) Update(obj any) error { return s.set(obj) }

func (s *store) Delete(obj any) error {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	key, l, err := s.labelled(obj)
	if err != nil {
		return err
	}
	x := s.x
	x.mu.Lock()
	delete(x.keys, key)
	hs := x.handlers
	x.mu.Unlock()
	emit(hs, key, l)
	return nil
}

// Replace takes a full list of the store's namespace (the initial one, or a
// relist after the watch lost its place): keys that vanished are deleted,
// new ones added. A relist's changes are delivered as events; the initial
// list's are not.
func (s *store) Replace(list []any, _ string) error {
	next := make(map[string]bool, len(list))
	for _, o := range list {
		key, l, err := s.labelled(o)
		if err != nil {
			return err
		}
		next[key] = l
	}
	x := s.x
	x.mu.Lock()
	var prev map[string]bool
	if s.ns == metav1.NamespaceAll {
		prev, x.keys = x.keys, next
	} else {
		prefix := s.ns + "/"
		prev = map[string]bool{}
		for k, l := range x.keys {
			if strings.HasPrefix(k, prefix) {
				prev[k] = l
				delete(x.keys, k)
			}
		}
		maps.Copy(x.keys, next)
	}
	hs := x.handlers
	if !s.synced {
		hs = nil // the initial list: the controllers' own initial lists cover it
		s.synced = true
		if x.pending--; x.pending == 0 {
			close(x.synced)
		}
	}
	x.mu.Unlock()
	if len(hs) > 0 {
		for k, l := range prev {
			if _, ok := next[k]; !ok {
				emit(hs, k, l)
			}
		}
		for k, l := range next {
			if pl, ok := prev[k]; !ok || pl != l {
				emit(hs, k, l)
			}
		}
	}
	return nil
}

func (s *store) Resync() error { return nil }

func emit(hs []func(Event), key string, labelled bool) {
	if len(hs) == 0 {
		return
	}
	ns, name, _ := toolscache.SplitMetaNamespaceKey(key)
	e := Event{Key: types.NamespacedName{Namespace: ns, Name: name}, Labelled: labelled}
	for _, h := range hs {
		h(e)
	}
}
