package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// An employer's event jumps the backlog; a restart's initial list and a
// resync do not; the operator's own schedule goes to the low lane.
func TestEmployerLaneJumpsTheBacklog(t *testing.T) {
	ctx := context.Background()
	req := func(n string) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: n}}
	}
	secret := func(conn, rv string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: conn + "-code", ResourceVersion: rv}}
	}
	byName := func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{req(o.GetName()[:len(o.GetName())-len("-code")])}
	}
	h := enqueueEmployer(byName)

	q := priorityqueue.New[reconcile.Request]("test")
	defer q.ShutDown()
	for _, n := range []string{"backlog-1", "backlog-2", "backlog-3"} {
		q.Add(req(n)) // new connections, default lane
	}
	h.Create(ctx, event.CreateEvent{Object: secret("restarted", "1"), IsInInitialList: true}, q)
	h.Update(ctx, event.UpdateEvent{ObjectOld: secret("resynced", "5"), ObjectNew: secret("resynced", "5")}, q)
	h.Create(ctx, event.CreateEvent{Object: secret("employer", "7")}, q)
	h.Update(ctx, event.UpdateEvent{ObjectOld: secret("webhook", "8"), ObjectNew: secret("webhook", "9")}, q)

	var got []string
	for q.Len() > 0 {
		it, _ := q.Get()
		got = append(got, it.Name)
		q.Done(it)
	}
	want := []string{"employer", "webhook", "backlog-1", "backlog-2", "backlog-3", "restarted", "resynced"}
	if len(got) != len(want) {
		t.Fatalf("dequeued %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("dequeued %v, want %v", got, want)
		}
	}

	if r := scheduled(ctrl.Result{RequeueAfter: time.Minute}); r.Priority == nil || *r.Priority != handler.LowPriority {
		t.Errorf("a scheduled requeue has priority %v, want LowPriority", r.Priority)
	}
	if r := scheduled(ctrl.Result{}); r.Priority != nil {
		t.Errorf("no requeue, priority %v", r.Priority)
	}
	if r := placedInLine(ctrl.Result{RequeueAfter: time.Second}); r.Priority == nil || *r.Priority <= 0 || *r.Priority >= employerPriority {
		t.Errorf("a place in the budget line has priority %v, want between new work (0) and employers (%d)", r.Priority, employerPriority)
	}
}
