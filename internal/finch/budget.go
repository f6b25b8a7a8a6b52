package finch

import (
	"context"
	"sort"
	"sync"
	"time"
)

// BudgetConfig limits request starts per endpoint: at most Requests in any
// rolling Window.
type BudgetConfig struct {
	Requests int
	Window   time.Duration
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
// the guarantee and sleeps until then.
type Budget struct {
	mu      sync.Mutex
	cfg     BudgetConfig
	window  time.Duration          // cfg.Window plus margin
	starts  map[string][]time.Time // per endpoint, ascending; past starts and future reservations
	changed chan struct{}          // closed by SetConfig to make waiters re-reserve
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
	close(b.changed)
	b.changed = make(chan struct{})
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
		at, changed := b.reserve(endpoint)
		if d := time.Until(at); d > 0 {
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				b.release(endpoint, at)
				return time.Time{}, ctx.Err()
			case <-changed:
				timer.Stop()
				b.release(endpoint, at)
				continue
			}
		}
		// Earlier requests may have finished later than planned (complete
		// moved their records): check the slot still keeps the guarantee.
		if b.confirm(endpoint, at) {
			return at, nil
		}
		b.release(endpoint, at)
	}
}

// confirm reports whether a request may start now in slot at: fewer than
// cfg.Requests other requests recorded in the window that ends now.
func (b *Budget) confirm(endpoint string, at time.Time) bool {
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
	return n < b.cfg.Requests
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
			ts[i] = done
			sort.Slice(ts, func(a, c int) bool { return ts[a].Before(ts[c]) })
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
// come back later instead of blocking a worker in Wait.
func (b *Budget) Delay(endpoint string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	cut := now.Add(-b.window)
	var live []time.Time
	for _, t := range b.starts[endpoint] {
		if t.After(cut) {
			live = append(live, t)
		}
	}
	return b.nextSlot(live, now).Sub(now)
}
