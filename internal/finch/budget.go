package finch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BudgetConfig limits request starts per endpoint: at most Requests in any
// rolling Window.
type BudgetConfig struct {
	Requests int
	Window   time.Duration
}

// ParseBudget reads REQUESTS/WINDOW, e.g. 900/5m (the operator's flags).
func ParseBudget(s string) (BudgetConfig, error) {
	n, w, ok := strings.Cut(s, "/")
	if !ok {
		return BudgetConfig{}, fmt.Errorf("%q: want REQUESTS/WINDOW, e.g. 10/1m", s)
	}
	req, err := strconv.Atoi(n)
	if err != nil || req <= 0 {
		return BudgetConfig{}, fmt.Errorf("%q: requests must be a positive integer", s)
	}
	win, err := time.ParseDuration(w)
	if err != nil || win <= 0 {
		return BudgetConfig{}, fmt.Errorf("%q: window must be a positive duration", s)
	}
	return BudgetConfig{Requests: req, Window: win}, nil
}

// DefaultBudget is Finch's documented application limit: about 20 requests per
// 60 s rolling window per endpoint.
var DefaultBudget = BudgetConfig{Requests: 20, Window: time.Minute}

// Budget is a client-side sliding-window limiter, one per Finch application,
// shared by every Client of that application (a credential rotation builds a
// new Client with the same Budget).
//
// It guarantees that, per endpoint, at most Requests calls to Wait return in
// any rolling window of Window plus a safety margin (the larger of 2% and
// 20ms, because Finch sees a request slightly after the client starts it). A
// token bucket with burst N would not do: it lets 2N requests through in one
// rolling window (N from the full bucket, then N refilled).
//
// Waiters are served in FIFO order: Wait reserves the earliest slot that keeps
// the guarantee and sleeps until then. (With a journal, waiters that wait for
// claims to free up, or for a failing journal, are not ordered among
// themselves.)
//
// In memory alone the guarantee covers one process lifetime. With a journal
// (AttachJournal) it covers every Budget sharing that journal, across
// restarts and during a leader change: see Claim.
type Budget struct {
	mu      sync.Mutex
	cfg     BudgetConfig
	window  time.Duration          // cfg.Window plus margin
	starts  map[string][]time.Time // per endpoint, ascending; past starts and future reservations
	changed chan struct{}          // closed by SetConfig to make waiters re-reserve
	line    map[string]*waitLine   // per endpoint: who Queue told to come back, and when

	// Journal state, unused without a journal.
	journal  BudgetJournal
	owner    string                   // ID prefix of this Budget's claims
	seq      uint64                   // last claim ID suffix
	own      map[string][]*ownClaim   // per endpoint: claims this Budget wrote
	foreign  map[string][]Claim       // per endpoint: everyone else's, as last read
	seen     uint64                   // bumped when foreign is replaced
	writing  map[string]chan struct{} // per endpoint: closed when the claim write in flight ends
	news     chan struct{}            // closed after each claim write, to wake waiters for claims
	failures int                      // consecutive failed journal writes
	retryAt  time.Time                // no journal write before this (backoff)
	lastErr  error                    // last failed journal write, for ctx errors
}

// NewBudget returns a Budget with cfg. Non-positive fields take their value
// from DefaultBudget: a budget cannot be disabled by mistake.
func NewBudget(cfg BudgetConfig) *Budget {
	b := &Budget{starts: make(map[string][]time.Time), changed: make(chan struct{})}
	b.setConfigLocked(cfg)
	return b
}

// SetConfig changes the limits at runtime. Requests already started keep
// counting; pending waiters re-reserve under the new limits.
func (b *Budget) SetConfig(cfg BudgetConfig) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setConfigLocked(cfg)
	b.broadcastLocked()
}

// Config returns the limits in effect (after defaulting).
func (b *Budget) Config() BudgetConfig {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg
}

func (b *Budget) setConfigLocked(cfg BudgetConfig) {
	if cfg.Requests <= 0 {
		cfg.Requests = DefaultBudget.Requests
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultBudget.Window
	}
	b.cfg = cfg
	b.window = cfg.Window + max(cfg.Window/50, 20*time.Millisecond)
}

// broadcastLocked wakes every sleeping waiter so it reserves again.
func (b *Budget) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
	if b.news != nil {
		b.newsLocked()
	}
}

// newsLocked wakes the waiters waiting for a claim, after the known claims
// changed.
func (b *Budget) newsLocked() {
	close(b.news)
	b.news = make(chan struct{})
}

// Wait blocks until the endpoint may start one request, and counts that
// request. It returns ctx.Err() (and gives the slot back) if ctx ends first.
func (b *Budget) Wait(ctx context.Context, endpoint string) error {
	_, err := b.acquire(ctx, endpoint)
	return err
}

// acquire is Wait that also returns the slot, so the caller can record when
// the request finished (complete).
func (b *Budget) acquire(ctx context.Context, endpoint string) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	for {
		// With a journal, first wait until a claim can be had, holding no
		// reservation: a reservation far in the future would push every
		// later waiter behind it (FIFO) even once claims free up.
		if d, news := b.claimWait(endpoint); d > 0 {
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return time.Time{}, b.ctxErr(ctx)
			case <-news:
				timer.Stop()
			}
			continue
		}
		at, changed := b.reserve(endpoint)
		if d := time.Until(at); d > 0 {
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				b.release(endpoint, at)
				return time.Time{}, b.ctxErr(ctx)
			case <-changed:
				timer.Stop()
				b.release(endpoint, at)
				continue
			}
		}
	take:
		for {
			// Earlier requests may have finished later than planned
			// (complete moved their records): check the slot still keeps
			// the guarantee.
			switch b.confirm(endpoint, at) {
			case slotGranted:
				return at, nil
			case slotNeedsClaim:
				// Keep the reservation while the claim is written, so
				// waiters behind it keep their place.
				if err := b.claim(ctx, endpoint); err != nil {
					b.release(endpoint, at)
					return time.Time{}, err
				}
				at = b.restamp(endpoint, at)
			case slotRestamp:
				at = b.restamp(endpoint, at)
			default:
				b.release(endpoint, at)
				break take
			}
		}
	}
}

// restamp moves the reservation at to now, for a slot that must start after
// a claim written since it was reserved. Like complete it only moves a record
// later; confirm checks the move kept the guarantee.
func (b *Budget) restamp(endpoint string, at time.Time) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	ts := b.starts[endpoint]
	for i := len(ts) - 1; i >= 0; i-- {
		if ts[i].Equal(at) {
			ts = append(ts[:i], ts[i+1:]...)
			break
		}
	}
	i := sort.Search(len(ts), func(i int) bool { return ts[i].After(now) })
	b.starts[endpoint] = append(ts[:i], append([]time.Time{now}, ts[i:]...)...)
	return now
}

// claimWait is how long a waiter must wait before a claim for endpoint can
// be had (0 without a journal), and a channel closed when that may change.
func (b *Budget) claimWait(endpoint string) (time.Duration, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.journal == nil {
		return 0, nil
	}
	now := time.Now()
	return b.claimableLocked(endpoint, now).Sub(now), b.news
}

// ctxErr is ctx's error, with the last journal failure when there is one:
// a caller that gave up waiting should learn why no slot came.
func (b *Budget) ctxErr(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lastErr != nil {
		return fmt.Errorf("%w; recording a budget claim failed: %w", ctx.Err(), b.lastErr)
	}
	return ctx.Err()
}

type verdict int

const (
	slotGranted    verdict = iota
	slotRetry              // release the reservation and start over
	slotRestamp            // move the reservation to now and confirm again
	slotNeedsClaim         // write a claim, then restamp
)

// confirm reports whether a request may start now in slot at: fewer than
// cfg.Requests other requests recorded in the window that ends now and, with
// a journal, an open claim of this Budget's to take the slot from (taken if
// so). Without an open claim it asks for one only if the claims known leave a
// slot free: otherwise the waiter starts over and waits in claimWait.
func (b *Budget) confirm(endpoint string, at time.Time) verdict {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	cut := now.Add(-b.window)
	n, self := 0, false
	for _, t := range b.starts[endpoint] {
		if !self && t.Equal(at) {
			self = true
			continue
		}
		if t.After(cut) && !t.After(now) {
			n++
		}
	}
	if n >= b.cfg.Requests {
		return slotRetry
	}
	if b.journal == nil {
		return slotGranted
	}
	b.pruneOwnLocked(endpoint, now)
	later := false
	for _, c := range b.own[endpoint] {
		if !c.open(now) {
			continue
		}
		if at.Before(c.At) {
			// Reserved before the claim was written: a slot restamped to
			// now is inside it (Claim's accounting needs At <= slot).
			later = true
			continue
		}
		c.used++
		c.last = now
		return slotGranted
	}
	if later {
		return slotRestamp
	}
	if b.claimableLocked(endpoint, now).After(now) {
		return slotRetry
	}
	return slotNeedsClaim
}

// complete moves a request's record from its slot to when its response came
// back. Finch counts a request when it arrives, which is between the two, so
// counting from the later time keeps the guarantee however slow the network.
func (b *Budget) complete(endpoint string, slot, done time.Time) {
	if !done.After(slot) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ts := b.starts[endpoint]
	for i := range ts {
		if ts[i].Equal(slot) {
			// Only this entry moved, and only later: shift it into place
			// instead of sorting the window on every response.
			for ; i+1 < len(ts) && ts[i+1].Before(done); i++ {
				ts[i] = ts[i+1]
			}
			ts[i] = done
			return
		}
	}
}

// reserve records the earliest start time for endpoint that keeps at most
// cfg.Requests starts in any window and is not earlier than any existing
// reservation (FIFO).
func (b *Budget) reserve(endpoint string) (time.Time, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	ts := b.starts[endpoint]

	// Drop starts that can no longer share a window with now or later.
	cut := now.Add(-b.window)
	i := 0
	for i < len(ts) && !ts[i].After(cut) {
		i++
	}
	if i > 0 {
		ts = append(ts[:0], ts[i:]...)
	}

	at := b.nextSlot(ts, now)
	b.starts[endpoint] = append(ts, at)
	return at, b.changed
}

// nextSlot is the earliest start not before now or any entry of ts (sorted)
// that keeps at most cfg.Requests starts in a window.
func (b *Budget) nextSlot(ts []time.Time, now time.Time) time.Time {
	at := now
	if n := len(ts); n > 0 && ts[n-1].After(at) {
		at = ts[n-1]
	}
	// With ts sorted and at >= every entry, the window ending at `at` holds at
	// most Requests-1 other starts iff the Requests-th latest is a full window
	// before it.
	if n := len(ts); n >= b.cfg.Requests {
		if t := ts[n-b.cfg.Requests].Add(b.window); t.After(at) {
			at = t
		}
	}
	return at
}

// release removes a reservation that will not be used. Removing an entry never
// breaks the guarantee for the others: it only makes windows emptier.
func (b *Budget) release(endpoint string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ts := b.starts[endpoint]
	for i := len(ts) - 1; i >= 0; i-- {
		if ts[i].Equal(at) {
			b.starts[endpoint] = append(ts[:i], ts[i+1:]...)
			return
		}
	}
}

// Delay is how long a request to endpoint would wait for budget if it asked
// now, without reserving anything. Callers with other work to do use it to
// come back later instead of blocking a worker in Wait. With a journal it
// includes what other processes claimed, as last read, and the backoff after
// a failed journal write.
func (b *Budget) Delay(endpoint string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.delayLocked(endpoint, time.Now())
}

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

func (b *Budget) delayLocked(endpoint string, now time.Time) time.Duration {
	// Starts are ascending: the live ones are a suffix (no copy; Delay runs
	// on every deferred pass and the window can hold thousands).
	ts := b.starts[endpoint]
	cut := now.Add(-b.window)
	live := ts[sort.Search(len(ts), func(i int) bool { return ts[i].After(cut) }):]
	at := b.nextSlot(live, now)
	if r := b.claimableLocked(endpoint, now); r.After(at) {
		at = r
	}
	return at.Sub(now)
}

// Claim is a persisted reservation of request slots for one endpoint, shared
// through a BudgetJournal by every process spending one Finch application's
// budget.
//
// Its owner may start up to Slots requests between At and Until, and every
// Budget counts it as Slots requests in each window that overlaps
// [At, Until]: a claim occupies Slots of the window from At until one window
// after Until. (Counting it only at At would not be safe: a slot used just
// before Until would still be in Finch's window after At's had left it.)
// Claimed-but-unused slots count as used, so a process that dies loses at
// most its one open claim per endpoint. Once a claim can hand out no more
// slots, its owner shrinks it to what it used (Slots) and when (Until = last
// start) in its next write, so finished claims stop holding the window.
//
// Claims count requests from their start: the margin in Budget's window
// covers Finch seeing them slightly later. (Within a process, complete also
// counts slow requests from their response.)
type Claim struct {
	ID    string    // unique among live claims: its writer recognises its own
	At    time.Time // earliest start it covers
	Until time.Time // latest start it covers
	Slots int
}

// BudgetJournal persists the claims of one Finch application's Budgets, by
// endpoint, so that a restarted process, or two during a leader change, know
// what was spent.
type BudgetJournal interface {
	// Load returns the recorded claims by endpoint (none if nothing is
	// recorded).
	Load(ctx context.Context) (map[string][]Claim, error)

	// Update reads the recorded claims, passes them to fn and stores what fn
	// returns, atomically: if another writer stored claims after they were
	// read, it reads them again and calls fn again, so what it stores was
	// computed from every earlier claim (optimistic concurrency). fn returning
	// a nil map stores nothing; an error from fn ends Update with that error,
	// which errors.As must still find. fn does not modify its argument.
	Update(ctx context.Context, fn func(map[string][]Claim) (map[string][]Claim, error)) error
}

// ownClaim is a claim this Budget wrote, with what it handed out of it.
type ownClaim struct {
	Claim
	used int       // slots handed out
	last time.Time // latest slot handed out
}

// open reports whether c can still hand out a slot at now.
func (c *ownClaim) open(now time.Time) bool {
	return c.used < c.Slots && !now.After(c.Until)
}

// view is what c counts for at now: as written while open, then shrunk to
// the slots it handed out (none: nothing to count).
func (c *ownClaim) view(now time.Time) (Claim, bool) {
	if c.open(now) {
		return c.Claim, true
	}
	if c.used == 0 {
		return Claim{}, false
	}
	v := c.Claim
	v.Slots, v.Until = c.used, c.last
	return v, true
}

// AttachJournal makes b spend only from claims recorded in j, so that every
// Budget sharing j (this process after a restart, another during a leader
// change) together keeps the limit. Call it once, right after NewBudget,
// before the Budget is shared; requests b already let through are recorded
// with its first claim.
//
// It reads the claims already recorded so that Delay and the first waiters
// account for what an earlier process spent. If that read fails the journal
// is attached anyway and the error returned: safety does not depend on it,
// because every claim is checked against the journal when it is written.
//
// With a journal, each slot comes from a claim of max(1, ceil(Requests/4))
// slots, open for half a window, so a busy endpoint costs about 4-5 journal
// writes per window and an idle one none. A slot is handed out only after
// its claim was written; while writes fail, waiters wait (bounded by their
// context) and retry with backoff.
func (b *Budget) AttachJournal(ctx context.Context, j BudgetJournal) error {
	if j == nil {
		return errors.New("attach budget journal: nil journal")
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("attach budget journal: claim ID: %w", err)
	}
	b.mu.Lock()
	if b.journal != nil {
		b.mu.Unlock()
		return errors.New("attach budget journal: budget already has a journal")
	}
	b.journal = j
	b.owner = hex.EncodeToString(rnd[:])
	b.own = make(map[string][]*ownClaim)
	b.foreign = make(map[string][]Claim)
	b.writing = make(map[string]chan struct{})
	b.news = make(chan struct{})
	now := time.Now()
	cut := now.Add(-b.window)
	// Requests let through before the journal existed become one spent claim
	// per endpoint, written with the next claim.
	for ep, ts := range b.starts {
		c := &ownClaim{}
		for _, t := range ts {
			if !t.After(cut) || t.After(now) {
				continue
			}
			if c.used == 0 {
				c.At = t
			}
			c.used++
			c.last = t
		}
		if c.used > 0 {
			c.ID, c.Slots, c.Until = b.nextIDLocked(), c.used, c.last
			b.own[ep] = []*ownClaim{c}
		}
	}
	seen := b.seen
	b.mu.Unlock()

	claims, err := j.Load(ctx)
	if err != nil {
		return fmt.Errorf("load budget claims: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen == seen { // no fresher read from a write in the meantime
		b.setForeignLocked(claims, time.Now())
		b.newsLocked()
	}
	return nil
}

// ReloadJournal reads b's journal again, after claims were added to it other
// than by a Budget's claim writes (budgetstore's Import of an older journal),
// and closes b's open claims: they were written without knowing the added
// claims, so the next slot comes from a claim written with them. Without a
// journal it does nothing.
func (b *Budget) ReloadJournal(ctx context.Context) error {
	b.mu.Lock()
	j := b.journal
	if j == nil {
		b.mu.Unlock()
		return nil
	}
	for _, cs := range b.own {
		for _, c := range cs {
			c.Slots = c.used // closed; counts what it handed out (nothing if none)
		}
	}
	seen := b.seen
	b.mu.Unlock()

	claims, err := j.Load(ctx)
	if err != nil {
		return fmt.Errorf("reload budget claims: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen == seen {
		b.setForeignLocked(claims, time.Now())
	}
	b.newsLocked()
	return nil
}

func (b *Budget) nextIDLocked() string {
	b.seq++
	return b.owner + "." + strconv.FormatUint(b.seq, 36)
}

// chunkLocked is how many slots one claim asks for: a quarter of the limit,
// so a busy endpoint writes about 4-5 claims per window and a process that
// dies strands at most a quarter of a window's slots per endpoint.
func (b *Budget) chunkLocked() int {
	return max(1, (b.cfg.Requests+3)/4)
}

// lifetimeLocked is how long a claim may hand out slots. Longer saves writes
// for a trickle of requests; shorter lets a dead process's last claim go
// sooner (it occupies its slots for lifetime plus a window).
func (b *Budget) lifetimeLocked() time.Duration {
	return b.cfg.Window / 2
}

// pruneOwnLocked forgets own claims whose recorded form no longer occupies
// the window. (Until then they are kept even when spent, so the next write
// can shrink or drop the recorded form instead of leaving it to others as a
// foreign claim.)
func (b *Budget) pruneOwnLocked(endpoint string, now time.Time) {
	cs := b.own[endpoint]
	keep := cs[:0]
	for _, c := range cs {
		if c.Until.Add(b.window).After(now) {
			keep = append(keep, c)
		}
	}
	clear(cs[len(keep):])
	if len(keep) == 0 {
		delete(b.own, endpoint)
		return
	}
	b.own[endpoint] = keep
}

// setForeignLocked replaces the view of other writers' claims with those in
// all that are not b's own and still occupy the window.
func (b *Budget) setForeignLocked(all map[string][]Claim, now time.Time) {
	mine := make(map[string]bool)
	for _, cs := range b.own {
		for _, c := range cs {
			mine[c.ID] = true
		}
	}
	foreign := make(map[string][]Claim, len(all))
	for ep, cs := range all {
		for _, c := range cs {
			if !mine[c.ID] && c.Until.Add(b.window).After(now) {
				foreign[ep] = append(foreign[ep], c)
			}
		}
	}
	b.foreign = foreign
	b.seen++
}

// knownLocked is every claim on endpoint b knows of: others' as last read
// and its own as they count now.
func (b *Budget) knownLocked(endpoint string, now time.Time) []Claim {
	known := append([]Claim(nil), b.foreign[endpoint]...)
	for _, c := range b.own[endpoint] {
		if v, ok := c.view(now); ok {
			known = append(known, v)
		}
	}
	return known
}

// claimableLocked is the earliest time from now at which endpoint can have a
// slot as far as claims go: now with an open claim or no journal, else when
// the known claims leave a slot free and the journal backoff has passed.
func (b *Budget) claimableLocked(endpoint string, now time.Time) time.Time {
	if b.journal == nil {
		return now
	}
	b.pruneOwnLocked(endpoint, now)
	for _, c := range b.own[endpoint] {
		if c.open(now) {
			return now
		}
	}
	t := now
	if b.retryAt.After(t) {
		t = b.retryAt
	}
	return freeFrom(b.knownLocked(endpoint, now), t, b.cfg.Requests, b.window)
}

// occupied is how many slots claims hold at t. Counting each claim until a
// window after its Until, whatever its At, is conservative (a claim never
// occupies less) and makes occupancy non-increasing in t, so a claim that
// fits at its At fits for its whole life.
func occupied(claims []Claim, t time.Time, window time.Duration) int {
	n := 0
	for _, c := range claims {
		if c.Until.Add(window).After(t) {
			n += c.Slots
		}
	}
	return n
}

// freeFrom is the earliest time from t at which claims leave at least one of
// limit slots free.
func freeFrom(claims []Claim, t time.Time, limit int, window time.Duration) time.Time {
	n := occupied(claims, t, window)
	if n < limit {
		return t
	}
	ends := make([]Claim, 0, len(claims))
	for _, c := range claims {
		if c.Until.Add(window).After(t) {
			ends = append(ends, c)
		}
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].Until.Before(ends[j].Until) })
	for _, c := range ends {
		if n -= c.Slots; n < limit {
			return c.Until.Add(window)
		}
	}
	return t // not reached: occupancy ends with the last claim
}

// errNoCapacity is the answer of a claim write that found the window fully
// claimed: nothing is written and the waiters sleep until it frees.
type errNoCapacity struct{ until time.Time }

func (e *errNoCapacity) Error() string {
	return "request budget fully claimed until " + e.until.Format(time.RFC3339Nano)
}

// claim writes a new claim for endpoint, or waits for the write another
// waiter has in flight; the caller then confirms its slot again. It returns
// an error only when ctx ends: a failed write sets a backoff that claimWait
// waits out, so no slot is handed out without a recorded claim.
func (b *Budget) claim(ctx context.Context, endpoint string) error {
	b.mu.Lock()
	if ch := b.writing[endpoint]; ch != nil {
		b.mu.Unlock()
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return b.ctxErr(ctx)
		}
	}
	if b.retryAt.After(time.Now()) {
		b.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	b.writing[endpoint] = ch
	j, id := b.journal, b.nextIDLocked()
	b.mu.Unlock()

	var grant *Claim
	var seen map[string][]Claim
	err := j.Update(ctx, func(cur map[string][]Claim) (map[string][]Claim, error) {
		var err error
		seen, grant, err = b.plan(cur, endpoint, id)
		if err != nil {
			return nil, err
		}
		return seen, nil
	})

	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.writing, endpoint)
	close(ch)
	defer b.newsLocked()
	now := time.Now()
	var full *errNoCapacity
	switch {
	case err == nil && grant != nil:
		b.own[endpoint] = append(b.own[endpoint], &ownClaim{Claim: *grant})
		b.failures, b.retryAt, b.lastErr = 0, time.Time{}, nil
		b.setForeignLocked(seen, now)
	case errors.As(err, &full):
		b.failures, b.retryAt, b.lastErr = 0, time.Time{}, nil
		b.setForeignLocked(seen, now)
	case ctx.Err() != nil:
		// Our caller gave up; another waiter writes. A write that landed
		// anyway is a claim b does not know as its own: it counts as
		// foreign, which only wastes it.
		if b.lastErr != nil {
			return fmt.Errorf("%w; recording a budget claim failed: %w", ctx.Err(), b.lastErr)
		}
		return ctx.Err()
	default:
		if err == nil {
			err = errors.New("journal stored nothing")
		}
		b.failures++
		b.retryAt = now.Add(journalBackoff(b.failures))
		b.lastErr = fmt.Errorf("record budget claim for %s: %w", endpoint, err)
	}
	return nil
}

// journalBackoff is the pause after n consecutive failed journal writes.
func journalBackoff(n int) time.Duration {
	d := 50 * time.Millisecond
	for i := 1; i < n && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}

// plan computes, from the recorded claims cur, what a claim write for
// endpoint stores: cur without the claims that no longer occupy any window,
// b's own claims as they count now (spent ones shrunk or dropped), and a new
// claim of up to a chunk of slots if the window has any free. It returns
// errNoCapacity (and the claims it saw) if it has none.
func (b *Budget) plan(cur map[string][]Claim, endpoint, id string) (map[string][]Claim, *Claim, error) {
	b.mu.Lock()
	now := time.Now()
	limit, window, chunk, life := b.cfg.Requests, b.window, b.chunkLocked(), b.lifetimeLocked()
	mine := make(map[string]bool)
	views := make(map[string][]Claim)
	for ep := range b.own {
		b.pruneOwnLocked(ep, now)
	}
	for ep, cs := range b.own {
		for _, c := range cs {
			mine[c.ID] = true
			if v, ok := c.view(now); ok {
				views[ep] = append(views[ep], v)
			}
		}
	}
	b.mu.Unlock()

	next := make(map[string][]Claim, len(cur)+1)
	for ep, cs := range cur {
		for _, c := range cs {
			if !mine[c.ID] && c.Until.Add(window).After(now) {
				next[ep] = append(next[ep], c)
			}
		}
	}
	// Own claims come from memory, which is never less accurate than the
	// record, and are re-added if the record lost them.
	for ep, vs := range views {
		next[ep] = append(next[ep], vs...)
	}
	free := limit - occupied(next[endpoint], now, window)
	if free <= 0 {
		return next, nil, &errNoCapacity{until: freeFrom(next[endpoint], now, limit, window)}
	}
	g := Claim{ID: id, At: now, Until: now.Add(life), Slots: min(chunk, free)}
	next[endpoint] = append(next[endpoint], g)
	for _, cs := range next {
		sort.Slice(cs, func(i, j int) bool { return cs[i].At.Before(cs[j].At) })
	}
	return next, &g, nil
}
