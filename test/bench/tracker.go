package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/testenv"
)

// connState is what the bench knows about one FinchConnection, from a watch.
type connState struct {
	phase        finchv1.Phase
	sessKind     finchv1.SessionKind
	sessID       string
	connID       string
	gen, obsGen  int64
	stalled      bool
	retries      int32
	firstSeen    time.Time
	awaitingAt   time.Time // first seen AwaitingConnect with a Connect session, final for its generation
	connectedAt  time.Time
	reauthAt     time.Time // first seen ReauthRequired with a Reauthenticate session
	lastChangeAt time.Time
}

func (s *connState) awaiting() bool {
	return s.phase == finchv1.PhaseAwaitingConnect && s.sessKind == finchv1.SessionConnect && s.obsGen == s.gen
}
func (s *connState) connected() bool { return s.phase == finchv1.PhaseConnected }
func (s *connState) reauth() bool {
	return s.phase == finchv1.PhaseReauthRequired && s.sessKind == finchv1.SessionReauthenticate
}

// tracker follows every FinchConnection through an informer in the bench
// process and timestamps when each first reached a state.
type tracker struct {
	mu   sync.Mutex
	objs map[types.NamespacedName]*connState
	c    cache.Cache
}

func startTracker(ctx context.Context, w *world) (*tracker, error) {
	c, err := cache.New(w.cfg, cache.Options{Scheme: testenv.Scheme, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		return nil, err
	}
	t := &tracker{objs: map[types.NamespacedName]*connState{}, c: c}
	inf, err := c.GetInformer(ctx, &finchv1.FinchConnection{})
	if err != nil {
		return nil, err
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { t.observe(o) },
		UpdateFunc: func(_, o any) { t.observe(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if conn, ok := o.(*finchv1.FinchConnection); ok {
				t.mu.Lock()
				delete(t.objs, client.ObjectKeyFromObject(conn))
				t.mu.Unlock()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("tracker cache did not sync")
	}
	return t, nil
}

func (t *tracker) observe(o any) {
	conn, ok := o.(*finchv1.FinchConnection)
	if !ok {
		return
	}
	now := time.Now()
	key := client.ObjectKeyFromObject(conn)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.objs[key]
	if s == nil {
		s = &connState{firstSeen: now}
		t.objs[key] = s
	}
	st := conn.Status
	s.phase, s.gen, s.obsGen, s.connID = st.Phase, conn.Generation, st.ObservedGeneration, st.ConnectionID
	s.sessKind, s.sessID = "", ""
	if st.Session != nil {
		s.sessKind, s.sessID = st.Session.Kind, st.Session.ID
	}
	s.stalled = meta.IsStatusConditionTrue(st.Conditions, finchv1.ConditionStalled)
	if st.Retry != nil {
		s.retries = st.Retry.Failures
	}
	s.lastChangeAt = now
	if s.awaitingAt.IsZero() && s.awaiting() {
		s.awaitingAt = now
	}
	if s.connectedAt.IsZero() && s.connected() {
		s.connectedAt = now
	}
	if s.reauthAt.IsZero() && s.reauth() {
		s.reauthAt = now
	}
}

// snapshot copies the states of a namespace ("" for all).
func (t *tracker) snapshot(ns string) map[types.NamespacedName]connState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[types.NamespacedName]connState, len(t.objs))
	for k, v := range t.objs {
		if ns == "" || k.Namespace == ns {
			out[k] = *v
		}
	}
	return out
}

func (t *tracker) get(key types.NamespacedName) (connState, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.objs[key]
	if !ok {
		return connState{}, false
	}
	return *s, true
}

// count counts the tracked objects in keys (or in ns when keys is nil) that satisfy pred.
func (t *tracker) count(ns string, keys []types.NamespacedName, pred func(*connState) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	if keys != nil {
		for _, k := range keys {
			if s := t.objs[k]; s != nil && pred(s) {
				n++
			}
		}
		return n
	}
	for k, s := range t.objs {
		if k.Namespace == ns && pred(s) {
			n++
		}
	}
	return n
}

// waitCount waits until want objects satisfy pred, printing progress; it
// returns the time the condition was first seen to hold.
func (t *tracker) waitCount(ctx context.Context, what, ns string, keys []types.NamespacedName, want int, pred func(*connState) bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	for {
		n := t.count(ns, keys, pred)
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d after %v", what, n, want, timeout)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Since(lastLog) > 10*time.Second {
			logf("%s: %d/%d", what, n, want)
			lastLog = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lastTime returns the latest of f over the given keys (zero if any is unset).
func (t *tracker) lastTime(keys []types.NamespacedName, f func(*connState) time.Time) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var last time.Time
	for _, k := range keys {
		s := t.objs[k]
		if s == nil {
			return time.Time{}, false
		}
		v := f(s)
		if v.IsZero() {
			return time.Time{}, false
		}
		if v.After(last) {
			last = v
		}
	}
	return last, true
}

func keysFor(ns, prefix string, from, n int) []types.NamespacedName {
	out := make([]types.NamespacedName, n)
	for i := range out {
		out[i] = types.NamespacedName{Namespace: ns, Name: connName(prefix, from+i)}
	}
	return out
}
