package controllers

import (
	"context"

	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Four lanes in controller-runtime's priority queue, highest first, so an
// employer who just finished Connect never waits behind a backlog:
//
//   - employerPriority: an employer's or Finch's action on one connection (a
//     code Secret handed over, a token written, a webhook recorded);
//   - budgetPriority: a pass coming back at its place in a Finch budget's
//     line (Budget.Queue), when its slot frees;
//   - 0 (the default): spec changes, new connections, manual requests;
//   - handler.LowPriority: what the operator scheduled itself otherwise (a
//     backoff retry, a wait for the operator-wide IP budget, the next
//     session refresh or introspection), and the initial list after a
//     restart.
//
// The queue keeps one entry per connection and raises it to the highest
// priority asked for, so an employer's event on a connection that is waiting
// for the budget moves it to the front.
const employerPriority = 10

// budgetPriority puts a pass that comes back for its budget slot ahead of
// new work: behind a burst of new connections in the default lane the slot
// went unused (10,000 created at once: no session for 50 s, 0.68 of the
// budget used), and a fair place in the line is worth nothing if its owner
// arrives after the slot has passed. These passes are few (one per slot,
// plus early returns) and cheap.
const budgetPriority = 1

// placedInLine marks a result's requeue as a place in a budget's line.
func placedInLine(r ctrl.Result) ctrl.Result {
	if r.RequeueAfter > 0 {
		r.Priority = ptr.To(budgetPriority)
	}
	return r
}

// scheduled marks a result's requeue as the operator's own schedule.
func scheduled(r ctrl.Result) ctrl.Result {
	if r.RequeueAfter > 0 {
		r.Priority = ptr.To(handler.LowPriority)
	}
	return r
}

// enqueueEmployer enqueues the requests mapped from an object's create and
// update events in the employer lane (deletes and generic events in the
// default lane).
func enqueueEmployer(m func(context.Context, client.Object) []reconcile.Request) handler.EventHandler {
	add := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		reqs := m(ctx, o)
		if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
			pq.AddWithOpts(priorityqueue.AddOpts{Priority: ptr.To(employerPriority)}, reqs...)
			return
		}
		for _, r := range reqs {
			q.Add(r)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.IsInInitialList {
				for _, r := range m(ctx, e.Object) {
					q.Add(r) // a restart's initial list is not an employer waiting
				}
				return
			}
			add(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.ObjectOld.GetResourceVersion() == e.ObjectNew.GetResourceVersion() {
				for _, r := range m(ctx, e.ObjectNew) {
					q.Add(r) // a resync: nothing happened
				}
				return
			}
			add(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			for _, r := range m(ctx, e.Object) {
				q.Add(r)
			}
		},
	}
}
