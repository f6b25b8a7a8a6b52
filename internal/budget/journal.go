package budget

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"
)

// Claim is a persisted reservation of request slots for one endpoint, shared
// through a Journal by every process spending one Finch application's
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

// Journal persists the claims of one Finch application's Budgets, by
// endpoint, so that a restarted process, or two during a leader change, know
// what was spent.
type Journal interface {
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
// change) together keeps the limit. Call it once, right after New,
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
func (b *Budget) AttachJournal(ctx context.Context, j Journal) error {
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
