package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// bareResult is the floor: the same objects created and status-patched by a
// plain client at the same concurrency, with no operator running.
type bareResult struct {
	created, total time.Duration
	cpu            cpuSnapshot
	load           string
	withEvents     *bareResult // the same plus one Event per object (-bare-events)
}

// bareClient measures the floor for creating and status-patching N objects.
func (b *benchRun) bareClient(ctx context.Context) error {
	logf("bare client: create + status-patch %d FinchConnections, concurrency %d", b.n, b.workers)
	bare, err := b.runBare(ctx)
	if err != nil {
		return err
	}
	b.bare = bare
	b.rep.add("bare client", "CPU during the measured round", bare.cpu.String()+" (load "+bare.load+")")
	if ev := bare.withEvents; ev != nil {
		b.rep.add("bare client", "same + 1 Event per object (-bare-events)", fmt.Sprintf("%s; CPU %s", secs(ev.total), ev.cpu))
	}
	q := "unthrottled"
	if b.bareQPS > 0 {
		q = fmt.Sprintf("QPS %.0f", b.bareQPS)
	}
	b.rep.add("bare client", "create + status patch, all N", fmt.Sprintf("%s (creates done at %s; %d workers, %s)", secs(bare.total), secs(bare.created), b.workers, q))
	return nil
}

func (b *benchRun) runBare(ctx context.Context) (bareResult, error) {
	if err := b.namespace(ctx, nsBare); err != nil {
		return bareResult{}, err
	}
	c := b.c
	if b.bareQPS > 0 {
		var err error
		if c, err = b.clientWithQPS(float32(b.bareQPS), int(2*b.bareQPS)); err != nil {
			return bareResult{}, err
		}
	}
	// Warm the API server up (CRD handlers, watch cache, connections) with a
	// tenth of the objects, so the measured run is not the first one.
	if _, err := b.bareRound(ctx, c, "warm", max(50, b.n/10), false); err != nil {
		return bareResult{}, err
	}
	res, err := b.bareRound(ctx, c, "bare", b.n, false)
	if err != nil || !b.bareEvents {
		return res, err
	}
	// The same again with one Event per object, like the operator's SessionCreated.
	ev, err := b.bareRound(ctx, c, "bare-ev", b.n, true)
	res.withEvents = &ev
	return res, err
}

func (b *benchRun) bareRound(ctx context.Context, c client.Client, prefix string, n int, withEvent bool) (bareResult, error) {
	ch := make(chan *finchv1.FinchConnection, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var patchErr error
	for range b.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for conn := range ch {
				patch := client.MergeFrom(conn.DeepCopy())
				conn.Status = awaitingStatus(conn)
				err := c.Status().Patch(ctx, conn, patch)
				if err == nil && withEvent {
					err = c.Create(ctx, sessionEvent(conn))
				}
				if err != nil {
					mu.Lock()
					patchErr = err
					mu.Unlock()
				}
			}
		}()
	}
	cpu0 := takeCPU()
	t0 := time.Now()
	err := createConns(ctx, c, nsBare, prefix, n, b.workers, 0, func(conn *finchv1.FinchConnection) { ch <- conn })
	created := time.Since(t0)
	close(ch)
	wg.Wait()
	res := bareResult{created: created, total: time.Since(t0), cpu: takeCPU().since(cpu0)}
	if err := cmpOr(err, patchErr); err != nil {
		return bareResult{}, err
	}
	err = b.deleteBare(ctx)
	res.load = loadAvg()
	return res, err
}

// deleteBare removes the bare objects so the operator never sees them.
func (b *benchRun) deleteBare(ctx context.Context) error {
	if err := b.c.DeleteAllOf(ctx, &finchv1.FinchConnection{}, client.InNamespace(nsBare)); err != nil {
		return err
	}
	err := poll(ctx, 100*time.Millisecond, 60*time.Second, func() (bool, error) {
		list := &finchv1.FinchConnectionList{}
		err := b.c.List(ctx, list, client.InNamespace(nsBare), client.Limit(1))
		return err == nil && len(list.Items) == 0, err
	})
	return timedOut(err, "bare objects not deleted after 60s")
}

// awaitingStatus is what the operator writes on a new connection's first pass
// (same fields and similar message lengths).
func awaitingStatus(conn *finchv1.FinchConnection) finchv1.FinchConnectionStatus {
	now := metav1.Now()
	exp := metav1.NewTime(now.Add(14 * 24 * time.Hour))
	id := fmt.Sprintf("%08x-1111-4222-8333-%012x", len(conn.Name), time.Now().UnixNano()&0xffffffffffff)
	gen := conn.Generation
	cond := func(typ string, st metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, ObservedGeneration: gen, LastTransitionTime: now, Reason: reason, Message: msg}
	}
	return finchv1.FinchConnectionStatus{
		ObservedGeneration: gen,
		Phase:              finchv1.PhaseAwaitingConnect,
		Session: &finchv1.Session{ID: id, ConnectURL: "http://127.0.0.1:40000/authorize?session=" + id,
			Kind: finchv1.SessionConnect, IssuedAt: now, ExpiresAt: exp, RequestHash: "0123456789abcdef"},
		FirstSessionTime: &now,
		Conditions: []metav1.Condition{
			cond(finchv1.ConditionReady, metav1.ConditionTrue, "AwaitingEmployer", fmt.Sprintf("Connect session %s is waiting for the employer until %s: send them status.session.connectURL", id, exp.UTC().Format(time.RFC3339))),
			cond(finchv1.ConditionStalled, metav1.ConditionFalse, "AwaitingEmployer", "not stalled"),
			cond(finchv1.ConditionReconciling, metav1.ConditionFalse, "Succeeded", "the operator has done all it can for now"),
			cond(finchv1.ConditionConnected, metav1.ConditionFalse, "AwaitingEmployer", "not connected yet"),
			cond(finchv1.ConditionReauthRequired, metav1.ConditionFalse, "NotRequired", "no reauthentication needed"),
		},
	}
}

// sessionEvent is an Event like the operator's SessionCreated.
func sessionEvent(conn *finchv1.FinchConnection) *eventsv1.Event {
	now := time.Now()
	return &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", conn.Name, now.UnixNano()), Namespace: conn.Namespace},
		EventTime:  metav1.NewMicroTime(now), ReportingController: "finch-operator", ReportingInstance: "finch-operator-bench",
		Action: "CreateSession", Reason: "SessionCreated", Type: corev1.EventTypeNormal,
		Regarding: corev1.ObjectReference{APIVersion: finchv1.GroupVersion.String(), Kind: "FinchConnection",
			Namespace: conn.Namespace, Name: conn.Name, UID: conn.UID, ResourceVersion: conn.ResourceVersion},
		Note: fmt.Sprintf("created Connect session %s (expires %s): send the employer status.session.connectURL",
			conn.Status.Session.ID, conn.Status.Session.ExpiresAt.UTC().Format(time.RFC3339)),
	}
}
