package budget

import (
	"slices"
	"sort"
	"time"
)

// Queue is Delay for callers that come back later instead of blocking: it
// returns 0 when waiter id of tenant may start a request to endpoint now, or
// within maxBlock while fewer than maxBlocked callers are blocked (the caller
// goes on and Waits), or else how long it should stay away (any positive
// time), keeping its place in the endpoint's line. A waiter that comes back early
// keeps its one place (id identifies it); one that never comes back (its
// object was deleted) lapses a few slots after its time, so it never blocks
// the line.
//
// One Finch application's budget is shared by connections of many
// namespaces, so the line is fair across tenants (the caller passes the
// namespace; a waiter keeps the tenant it joined with): each tenant has a
// FIFO queue and the queues are served round robin, so a namespace that
// creates thousands of connections does not make another's few wait behind
// all of them (hours at Finch's 20 requests a minute). A newcomer joins its tenant's queue rather than cutting in, unless
// its fair place is due within maxBlock.
//
// A place is a time: the p-th place is when the p-th slot from now frees
// (freeSlotLocked), recomputed each time its waiter comes back, since fair
// newcomers of other tenants may have been put ahead of it. The budget is a
// sliding window, so slots free in the pattern the window's starts left, one
// window later, and again every window after. A backlog of waiters therefore
// comes back one per slot as slots free instead of all at once each time one
// frees (which would keep every worker busy re-deferring, or blocked in Wait,
// while an employer waits), and no slot is left unused for want of a waiter
// (places spread evenly, one slot apart, did that whenever the last window's
// starts came in bursts: 0.92 of the budget used at 10,000 connections).
func (b *Budget) Queue(endpoint, tenant, id string, maxBlock time.Duration) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	l := b.line[endpoint]
	if l == nil {
		l = &waitLine{byID: map[string]*waiter{}, byTenant: map[string]*tenantQueue{}}
	}
	if !now.Before(l.sweepAt) {
		// Lapsing is per slot (at least 10 s), so a sweep a second keeps
		// it timely without walking a long line on every call.
		interval := b.window / time.Duration(b.cfg.Requests)
		l.lapse(now.Add(-max(3*interval, 10*time.Second)))
		l.sweepAt = now.Add(time.Second)
	}
	d := b.delayLocked(endpoint, now)
	w := l.byID[id]
	if w == nil {
		if len(l.byID) == 0 && b.mayGoLocked(endpoint, now, d, maxBlock) {
			return 0
		}
		w = l.add(tenant, id)
	}
	j := w.index()
	at := b.freeSlotLocked(endpoint, now, l.position(w.tenant, j))
	if e := now.Add(d); e.After(at) {
		at = e // journal claims or backoff: never before the budget frees
	}
	if j > 0 {
		if ahead := w.tenant.queue[j-1]; ahead.promise.After(at) {
			at = ahead.promise // FIFO within the tenant, whenever computed
		}
	}
	wait := at.Sub(now)
	if b.mayGoLocked(endpoint, now, wait, maxBlock) {
		l.remove(w, true)
		wait = 0
	} else {
		w.promise = at
	}
	switch {
	case len(l.byID) == 0:
		delete(b.line, endpoint)
	case b.line == nil:
		b.line = map[string]*waitLine{endpoint: l}
	default:
		b.line[endpoint] = l
	}
	return wait
}

// maxBlocked is how many callers Queue lets block in Wait for one endpoint
// at a time. Beyond them a caller whose slot is due within maxBlock still
// takes a place in the line: otherwise every worker ends up blocked (ten
// workers cover ten slots, under five seconds at most budgets), nobody ever
// joins the line, and the order of service is the work queue's, first come
// first served whatever the namespace. Two keep a slot that frees while one
// request is in flight from going unused.
const maxBlocked = 2

// mayGoLocked reports whether a caller whose slot is due in wait may go on
// to Wait: at once if its slot is free now, within maxBlock if fewer than
// maxBlocked callers are already blocked (their reservations are the starts
// after now).
func (b *Budget) mayGoLocked(endpoint string, now time.Time, wait, maxBlock time.Duration) bool {
	if wait <= 0 {
		return true
	}
	if wait > maxBlock {
		return false
	}
	ts := b.starts[endpoint]
	blocked := len(ts) - sort.Search(len(ts), func(i int) bool { return ts[i].After(now) })
	return blocked < maxBlocked
}

// waitLine is one endpoint's line for Queue: a FIFO queue per tenant, served
// round robin. Each waiter costs about 125 bytes with a short id (its waiter,
// its slot in its tenant's queue and its byID entry): 5,000 cost about 630 KB.
type waitLine struct {
	tenants  []*tenantQueue // the rotation: next to serve first, none empty
	byTenant map[string]*tenantQueue
	byID     map[string]*waiter
	seq      uint64    // last waiter's seq
	sweepAt  time.Time // next lapse sweep
}

type tenantQueue struct {
	name  string
	queue []*waiter // ascending seq: first come, first served
}

type waiter struct {
	id      string
	tenant  *tenantQueue
	seq     uint64    // order of arrival, to find it in its tenant's queue
	promise time.Time // the time last given to its caller
}

// index is w's place in its tenant's queue (0: next), found by seq in
// O(log n) rather than kept, which removals would make stale.
func (w *waiter) index() int {
	q := w.tenant.queue
	return sort.Search(len(q), func(i int) bool { return q[i].seq >= w.seq })
}

// position is how many waiters round robin serves before the j-th (from 0)
// of tenant t: the first j of every tenant (all of a shorter one), and the
// j-th of each tenant ahead of t in the rotation. O(tenants).
func (l *waitLine) position(t *tenantQueue, j int) int {
	p, ahead := 0, true
	for _, u := range l.tenants {
		if u == t {
			ahead = false
		}
		p += min(len(u.queue), j)
		if ahead && len(u.queue) > j {
			p++
		}
	}
	return p
}

// add puts a new waiter at the back of its tenant's queue, and the tenant at
// the back of the rotation if it had no waiter.
func (l *waitLine) add(tenant, id string) *waiter {
	t := l.byTenant[tenant]
	if t == nil {
		t = &tenantQueue{name: tenant}
		l.byTenant[tenant] = t
		l.tenants = append(l.tenants, t)
	}
	l.seq++
	w := &waiter{id: id, tenant: t, seq: l.seq}
	t.queue = append(t.queue, w)
	l.byID[id] = w
	return w
}

// remove takes w out of the line, served (it goes on to Wait) or not; a
// tenant left with no waiter leaves the rotation.
//
// A tenant just served goes to the back of the rotation: the waiters left
// are then in the fair order they had, less the one served, so the places
// already given stay right. Kept in join order instead, the first tenant's
// next waiter would be first again after each of its waiters went, and with
// one slot freeing at a time another tenant's waiter, second in line, would
// never be first.
func (l *waitLine) remove(w *waiter, served bool) {
	t := w.tenant
	if i := w.index(); i == 0 {
		t.queue[0] = nil
		t.queue = t.queue[1:] // the usual case: no copy
	} else {
		t.queue = slices.Delete(t.queue, i, i+1)
	}
	delete(l.byID, w.id)
	switch {
	case len(t.queue) == 0:
		l.dropTenants()
	case served:
		if i := slices.Index(l.tenants, t); i >= 0 && i < len(l.tenants)-1 {
			copy(l.tenants[i:], l.tenants[i+1:])
			l.tenants[len(l.tenants)-1] = t
		}
	}
}

// lapse removes the waiters whose promised time passed before cut: their
// owners did not come back (deleted, or requeued elsewhere).
func (l *waitLine) lapse(cut time.Time) {
	emptied := false
	for _, t := range l.tenants {
		q := t.queue[:0]
		for _, w := range t.queue {
			if w.promise.Before(cut) {
				delete(l.byID, w.id)
			} else {
				q = append(q, w)
			}
		}
		clear(t.queue[len(q):])
		t.queue = q
		emptied = emptied || len(q) == 0
	}
	if emptied {
		l.dropTenants()
	}
}

// dropTenants takes the tenants with no waiter out of the rotation.
func (l *waitLine) dropTenants() {
	l.tenants = slices.DeleteFunc(l.tenants, func(t *tenantQueue) bool {
		if len(t.queue) == 0 {
			delete(l.byTenant, t.name)
			return true
		}
		return false
	})
}

// freeSlotLocked is when the k-th request slot from now (k from 0) frees for
// endpoint, if nothing else starts: a slot free now, or one window after the
// start that holds it, repeating every window.
func (b *Budget) freeSlotLocked(endpoint string, now time.Time, k int) time.Time {
	ts := b.starts[endpoint]
	cut := now.Add(-b.window)
	live := ts[sort.Search(len(ts), func(i int) bool { return ts[i].After(cut) }):]
	n := b.cfg.Requests
	if len(live) > n {
		live = live[len(live)-n:] // the latest n decide when slots free
	}
	free := n - len(live)
	q, r := k/n, k%n
	at := now
	if r >= free {
		at = live[r-free].Add(b.window)
	}
	return at.Add(time.Duration(q) * b.window)
}
