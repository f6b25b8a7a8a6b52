package budget

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config limits request starts per endpoint: at most Requests in any
// rolling Window.
type Config struct {
	Requests int
	Window   time.Duration
}

// Parse reads REQUESTS/WINDOW, e.g. 900/5m (the operator's flags).
func Parse(s string) (Config, error) {
	n, w, ok := strings.Cut(s, "/")
	if !ok {
		return Config{}, fmt.Errorf("%q: want REQUESTS/WINDOW, e.g. 10/1m", s)
	}
	req, err := strconv.Atoi(n)
	if err != nil || req <= 0 {
		return Config{}, fmt.Errorf("%q: requests must be a positive integer", s)
	}
	win, err := time.ParseDuration(w)
	if err != nil || win <= 0 {
		return Config{}, fmt.Errorf("%q: window must be a positive duration", s)
	}
	return Config{Requests: req, Window: win}, nil
}

// Default is Finch's documented application limit: about 20 requests per
// 60 s rolling window per endpoint.
var Default = Config{Requests: 20, Window: time.Minute}

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
	cfg     Config
	window  time.Duration          // cfg.Window plus margin
	starts  map[string][]time.Time // per endpoint, ascending; past starts and future reservations
	changed chan struct{}          // closed by SetConfig to make waiters re-reserve
	line    map[string]*waitLine   // per endpoint: who Queue told to come back, and when

	// Journal state, unused without a journal.
	journal  Journal
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

// New returns a Budget with cfg. Non-positive fields take their value
// from Default: a budget cannot be disabled by mistake.
func New(cfg Config) *Budget {
	b := &Budget{starts: make(map[string][]time.Time), changed: make(chan struct{})}
	b.setConfigLocked(cfg)
	return b
}

// SetConfig changes the limits at runtime. Requests already started keep
// counting; pending waiters re-reserve under the new limits.
func (b *Budget) SetConfig(cfg Config) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setConfigLocked(cfg)
	b.broadcastLocked()
}

// Config returns the limits in effect (after defaulting).
func (b *Budget) Config() Config {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg
}

func (b *Budget) setConfigLocked(cfg Config) {
	if cfg.Requests <= 0 {
		cfg.Requests = Default.Requests
	}
	if cfg.Window <= 0 {
		cfg.Window = Default.Window
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
