package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/testenv"
)

// connState is what the bench knows about one FinchConnection, from a watch.
type connState struct {
	phase       finchv1.Phase
	sessKind    finchv1.SessionKind
	sessID      string
	unrecorded  bool // a reauthentication may have been issued whose link was not recorded (status.pendingCall)
	connID      string
	gen, obsGen int64
	firstSeen   time.Time
	awaitingAt  time.Time // first seen AwaitingConnect with a Connect session, final for its generation
	connectedAt time.Time
	reauthAt    time.Time // first seen ReauthRequired with a Reauthenticate session
}

func (s *connState) awaiting() bool {
	return s.phase == finchv1.PhaseAwaitingConnect && s.sessKind == finchv1.SessionConnect && s.obsGen == s.gen
}
func (s *connState) connected() bool { return s.phase == finchv1.PhaseConnected }

// reauth: a reauthentication session is published, or one may have been
// issued before a crash and the operator rightly waits for it.
func (s *connState) reauth() bool {
	return s.phase == finchv1.PhaseReauthRequired && (s.sessKind == finchv1.SessionReauthenticate || s.unrecorded)
}

// The times latest can take.
func tAwaiting(s *connState) time.Time  { return s.awaitingAt }
func tConnected(s *connState) time.Time { return s.connectedAt }
func tReauth(s *connState) time.Time    { return s.reauthAt }

// tracker follows every FinchConnection through an informer in the bench
// process and timestamps when each first reached a state.
type tracker struct {
	mu   sync.Mutex
	objs map[types.NamespacedName]*connState
}

func startTracker(ctx context.Context, cfg *rest.Config) (*tracker, error) {
	c, err := cache.New(cfg, cache.Options{Scheme: testenv.Scheme, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		return nil, err
	}
	t := &tracker{objs: map[types.NamespacedName]*connState{}}
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
	s.unrecorded = st.Session == nil && st.PendingCall != nil && st.PendingCall.Kind == finchv1.PendingReauthenticate
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

// count counts the tracked objects in keys that satisfy pred.
func (t *tracker) count(keys []types.NamespacedName, pred func(*connState) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, k := range keys {
		if s := t.objs[k]; s != nil && pred(s) {
			n++
		}
	}
	return n
}

// waitCount waits until every one of keys satisfies pred, printing progress.
func (t *tracker) waitCount(ctx context.Context, what string, keys []types.NamespacedName, pred func(*connState) bool, timeout time.Duration) error {
	lastLog := time.Now()
	n := 0
	err := poll(ctx, 50*time.Millisecond, timeout, func() (bool, error) {
		if n = t.count(keys, pred); n < len(keys) && time.Since(lastLog) > 10*time.Second {
			logf("%s: %d/%d", what, n, len(keys))
			lastLog = time.Now()
		}
		return n >= len(keys), nil
	})
	return timedOut(err, "%s: %d of %d after %v", what, n, len(keys), timeout)
}

// latest is the latest of f over keys (unset times are skipped).
func (t *tracker) latest(keys []types.NamespacedName, f func(*connState) time.Time) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var last time.Time
	for _, k := range keys {
		if s := t.objs[k]; s != nil && f(s).After(last) {
			last = f(s)
		}
	}
	return last
}
