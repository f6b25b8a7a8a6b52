package budget

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// maxInWindow returns the largest number of times within any half-open
// window (t-w, t].
func maxInWindow(times []time.Time, w time.Duration) int {
	best := 0
	for i := range times {
		n := 0
		for j := range times {
			if !times[j].After(times[i]) && times[j].After(times[i].Add(-w)) {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

func TestBudgetSlidingWindow(t *testing.T) {
	const n, w = 5, 200 * time.Millisecond
	b := New(Config{Requests: n, Window: w})
	ctx := context.Background()
	start := time.Now()
	var starts []time.Time
	for range 15 {
		if err := b.Wait(ctx, EndpointIntrospect); err != nil {
			t.Fatal(err)
		}
		starts = append(starts, time.Now())
	}
	if d := time.Since(start); d < 2*w {
		t.Errorf("15 waits took %v, want >= %v", d, 2*w)
	}
	if got := maxInWindow(starts, w); got > n {
		t.Errorf("%d starts in one %v window, want <= %d", got, w, n)
	}
	// The first n go through at once (no artificial spacing).
	if d := starts[n-1].Sub(start); d > 50*time.Millisecond {
		t.Errorf("first %d waits took %v", n, d)
	}
}

func TestBudgetConcurrentWaiters(t *testing.T) {
	// A start is timestamped after Wait returns, so on a busy machine a
	// timestamp can lag its grant by a scheduling delay. Checking windows
	// shortened by slack keeps the check sound for delays up to slack (a
	// violation seen there is a real one) and free of false alarms.
	const n, w, slack = 4, 400 * time.Millisecond, 200 * time.Millisecond
	b := New(Config{Requests: n, Window: w})
	var mu sync.Mutex
	var starts []time.Time
	var wg sync.WaitGroup
	begin := time.Now()
	for range 6 {
		wg.Go(func() {
			for range 3 {
				if err := b.Wait(context.Background(), EndpointCreateSession); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				starts = append(starts, time.Now())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got := maxInWindow(starts, w-slack); got > n {
		t.Errorf("%d starts within %v, want <= %d per %v window", got, w-slack, n, w)
	}
	// 18 starts at 4 per window need at least 4 full windows after the first.
	if d := time.Since(begin); d < 4*w {
		t.Errorf("18 starts took %v, want >= %v", d, 4*w)
	}
}

func TestBudgetEndpointsIndependent(t *testing.T) {
	b := New(Config{Requests: 1, Window: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, ep := range []string{EndpointCreateSession, EndpointIntrospect, EndpointToken} {
		if err := b.Wait(ctx, ep); err != nil {
			t.Fatalf("%s: %v", ep, err)
		}
	}
}

func TestBudgetCancelUnblocksAndReleases(t *testing.T) {
	const w = 400 * time.Millisecond
	b := New(Config{Requests: 1, Window: w})
	if err := b.Wait(context.Background(), EndpointDisconnect); err != nil {
		t.Fatal(err)
	}
	first := time.Now()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Wait(ctx, EndpointDisconnect) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v, want context.Canceled", err)
		}
	case <-time.After(200 * time.Millisecond):
		t.Fatal("cancel did not unblock Wait")
	}

	// The cancelled reservation was given back: the next slot is one window
	// after the first start, not two.
	if err := b.Wait(context.Background(), EndpointDisconnect); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(first); d < w || d > w+w/2 {
		t.Errorf("next start after %v, want about %v", d, w)
	}

	// An already-cancelled context never takes a slot.
	if err := b.Wait(ctx, EndpointIntrospect); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait(cancelled) = %v", err)
	}
}

func TestBudgetSetConfigWakesWaiters(t *testing.T) {
	b := New(Config{Requests: 1, Window: time.Hour})
	_ = b.Wait(context.Background(), EndpointIntrospect)
	done := make(chan error, 1)
	go func() { done <- b.Wait(context.Background(), EndpointIntrospect) }()
	time.Sleep(20 * time.Millisecond)
	b.SetConfig(Config{Requests: 10, Window: time.Hour})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("SetConfig did not let the waiter through")
	}
	if got := b.Config(); got.Requests != 10 {
		t.Errorf("Config = %+v", got)
	}
}

func TestBudgetDefaults(t *testing.T) {
	if got := New(Config{}).Config(); got != Default {
		t.Errorf("New(zero).Config() = %+v", got)
	}
	if got := New(Config{Requests: 3}).Config(); got != (Config{3, time.Minute}) {
		t.Errorf("New({3,0}).Config() = %+v", got)
	}
}

func TestBudgetDelayPredictsWait(t *testing.T) {
	b := New(Config{Requests: 2, Window: time.Second})
	ctx := context.Background()
	if d := b.Delay("GET /introspect"); d > 0 {
		t.Fatalf("empty budget: Delay = %s, want 0", d)
	}
	for i := 0; i < 2; i++ {
		if err := b.Wait(ctx, "GET /introspect"); err != nil {
			t.Fatal(err)
		}
	}
	d := b.Delay("GET /introspect")
	if d < 900*time.Millisecond || d > 1100*time.Millisecond {
		t.Fatalf("full budget: Delay = %s, want about one window", d)
	}
	if d := b.Delay("POST /connect/sessions"); d > 0 {
		t.Fatalf("other endpoint: Delay = %s, want 0 (budgets are per endpoint)", d)
	}
	// Delay reserves nothing.
	if d2 := b.Delay("GET /introspect"); d2 > d {
		t.Fatalf("Delay must not reserve: %s then %s", d, d2)
	}
}

func TestBudgetCountsSlowRequestsFromTheirResponse(t *testing.T) {
	// A request that took long may have reached Finch late; the next request
	// beyond the limit must wait a full window after its response, not its start.
	b := New(Config{Requests: 1, Window: 100 * time.Millisecond})
	ctx := context.Background()
	slot, err := b.acquire(ctx, "GET /introspect")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // the slow round trip
	done := time.Now()
	b.complete("GET /introspect", slot, done)
	next, err := b.acquire(ctx, "GET /introspect")
	if err != nil {
		t.Fatal(err)
	}
	if gap := next.Sub(done); gap < 100*time.Millisecond {
		t.Fatalf("next request %s after the slow one's response, want at least one window", gap)
	}
}

// memJournal is an in-memory Journal with the same optimistic
// concurrency as the ConfigMap store: fn runs on a copy read without the
// lock, and the result is stored only if nobody stored in between.
type memJournal struct {
	mu        sync.Mutex
	version   int
	claims    map[string][]Claim
	writes    int // successful stores
	conflicts int // fn results thrown away because of a concurrent store
	updates   int // Update calls
	loadErr   error
	failErr   error // Update fails with it, storing nothing
	lostAck   int   // the next lostAck stores land but Update reports failErrLostAck
}

var errJournalDown = errors.New("journal down")

func copyClaims(in map[string][]Claim) map[string][]Claim {
	out := make(map[string][]Claim, len(in))
	for ep, cs := range in {
		out[ep] = append([]Claim(nil), cs...)
	}
	return out
}

func (m *memJournal) Load(context.Context) (map[string][]Claim, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.loadErr != nil {
		return nil, m.loadErr
	}
	return copyClaims(m.claims), nil
}

func (m *memJournal) Update(_ context.Context, fn func(map[string][]Claim) (map[string][]Claim, error)) error {
	for {
		m.mu.Lock()
		m.updates++
		if m.failErr != nil {
			m.mu.Unlock()
			return m.failErr
		}
		v, cur := m.version, copyClaims(m.claims)
		m.mu.Unlock()
		next, err := fn(cur)
		if err != nil || next == nil {
			return err
		}
		runtime.Gosched() // let a concurrent writer in between
		m.mu.Lock()
		if m.version != v {
			m.conflicts++
			m.mu.Unlock()
			continue
		}
		m.claims, m.version = copyClaims(next), v+1
		m.writes++
		lost := m.lostAck > 0
		if lost {
			m.lostAck--
		}
		m.mu.Unlock()
		if lost {
			return errJournalDown
		}
		return nil
	}
}

func (m *memJournal) set(f func(m *memJournal)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m)
}

func (m *memJournal) stats() (writes, conflicts, updates int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes, m.conflicts, m.updates
}

func journaled(t *testing.T, cfg Config, j Journal) *Budget {
	t.Helper()
	b := New(cfg)
	if err := b.AttachJournal(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	return b
}

// slots collects the slots acquire handed out, across Budgets.
type slots struct {
	mu sync.Mutex
	ts []time.Time
}

func (s *slots) add(t time.Time) {
	s.mu.Lock()
	s.ts = append(s.ts, t)
	s.mu.Unlock()
}

func (s *slots) snapshot() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.ts...)
}

// spend runs g goroutines taking slots from b as fast as it gives them until
// ctx ends, and returns when they have stopped.
func spend(ctx context.Context, b *Budget, g int, endpoint string, rec *slots) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range g {
		wg.Go(func() {
			for ctx.Err() == nil {
				at, err := b.acquire(ctx, endpoint)
				if err != nil {
					return
				}
				rec.add(at)
				b.complete(endpoint, at, time.Now())
			}
		})
	}
	return &wg
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestBudgetJournalRestartKeepsWindow kills a Budget spending at full rate
// part-way into its second window and starts a new one on the same journal
// at once: together they never exceed the limit in any rolling window.
func TestBudgetJournalRestartKeepsWindow(t *testing.T) {
	const n, w = 6, 300 * time.Millisecond
	cfg := Config{Requests: n, Window: w}
	j := &memJournal{}
	var rec slots

	ctx1, kill := context.WithCancel(context.Background())
	wg := spend(ctx1, journaled(t, cfg, j), 3, EndpointIntrospect, &rec)
	eventually(t, 10*time.Second, "the first life to reach its second window", func() bool { return len(rec.snapshot()) > n })
	kill() // SIGKILL: waiters and claim writes are abandoned where they are
	wg.Wait()
	first := len(rec.snapshot())

	ctx2, stop := context.WithTimeout(context.Background(), 3*w)
	defer stop()
	spend(ctx2, journaled(t, cfg, j), 3, EndpointIntrospect, &rec).Wait()

	all := rec.snapshot()
	if got := maxInWindow(all, w); got > n {
		t.Errorf("%d starts in one %v window across the restart, want <= %d", got, w, n)
	}
	if len(all) == first {
		t.Error("the second life got no slot at all")
	}
	writes, conflicts, _ := j.stats()
	t.Logf("%d slots before the restart, %d after; %d journal writes, %d conflicts", first, len(all)-first, writes, conflicts)
}

// TestBudgetJournalRestartLosesAtMostOneChunk: what a restarted Budget can
// still spend in the window is the limit minus what the first one used,
// minus at most the unused part of its open claim.
func TestBudgetJournalRestartLosesAtMostOneChunk(t *testing.T) {
	const n, used, chunk = 8, 3, 2 // chunk = ceil(8/4)
	// A long window: nothing expires during the test.
	cfg := Config{Requests: n, Window: 10 * time.Second}
	j := &memJournal{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	b1 := journaled(t, cfg, j)
	for range used {
		if err := b1.Wait(ctx, EndpointToken); err != nil {
			t.Fatal(err)
		}
	}

	b2 := journaled(t, cfg, j)
	got := 0
	for b2.Delay(EndpointToken) <= 0 && got < n {
		if err := b2.Wait(ctx, EndpointToken); err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got < n-used-chunk || got > n-used {
		t.Errorf("restarted budget spent %d slots in the window, want %d..%d", got, n-used-chunk, n-used)
	}
	if d := b2.Delay(EndpointToken); d < 5*time.Second {
		t.Errorf("after spending what is left, Delay = %s, want about a window", d)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := b2.Wait(short, EndpointToken); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait beyond the window's budget = %v, want DeadlineExceeded", err)
	}
	t.Logf("first life used %d, restarted budget got %d of %d (lost %d)", used, got, n, n-used-got)
}

// TestBudgetJournalSharedNeverOverspends runs two Budgets on one journal at
// full rate at the same time (split brain during a leader change).
func TestBudgetJournalSharedNeverOverspends(t *testing.T) {
	const n, w = 5, 250 * time.Millisecond
	cfg := Config{Requests: n, Window: w}
	j := &memJournal{}
	var rec slots
	ctx, cancel := context.WithTimeout(context.Background(), 4*w)
	defer cancel()
	a := spend(ctx, journaled(t, cfg, j), 3, EndpointCreateSession, &rec)
	b := spend(ctx, journaled(t, cfg, j), 3, EndpointCreateSession, &rec)
	a.Wait()
	b.Wait()

	all := rec.snapshot()
	if got := maxInWindow(all, w); got > n {
		t.Errorf("%d starts in one %v window from two budgets, want <= %d", got, w, n)
	}
	if len(all) <= n {
		t.Errorf("%d slots in 4 windows: the budgets stalled", len(all))
	}
	writes, conflicts, _ := j.stats()
	t.Logf("%d slots, %d journal writes, %d conflicts", len(all), writes, conflicts)
}

// TestBudgetJournalWriteFailureHandsOutNoSlot: while the journal fails no
// slot is handed out, the write is retried with backoff, and the error says
// why the wait ended.
func TestBudgetJournalWriteFailureHandsOutNoSlot(t *testing.T) {
	j := &memJournal{failErr: errJournalDown}
	b := journaled(t, Config{Requests: 4, Window: time.Second}, j)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := b.acquire(ctx, EndpointDisconnect)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errJournalDown) {
		t.Fatalf("acquire = %v, want DeadlineExceeded and the journal error", err)
	}
	b.mu.Lock()
	left := len(b.starts[EndpointDisconnect])
	b.mu.Unlock()
	if left != 0 {
		t.Errorf("%d slots recorded after a failed journal, want 0", left)
	}
	if _, _, updates := j.stats(); updates < 2 || updates > 20 {
		t.Errorf("%d journal writes in 300ms, want a few (retried with backoff)", updates)
	}

	j.set(func(m *memJournal) { m.failErr = nil })
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Wait(ctx, EndpointDisconnect); err != nil {
		t.Fatalf("Wait after the journal recovered: %v", err)
	}
	if cs, _ := j.Load(ctx); len(cs[EndpointDisconnect]) != 1 {
		t.Errorf("journal holds %v, want one claim", cs)
	}
}

// TestBudgetJournalLostAckCountsAsSpent: a write that landed although
// Update reported failure (a timeout after the API server committed) is a
// claim the Budget does not know as its own; it must count as spent.
func TestBudgetJournalLostAckCountsAsSpent(t *testing.T) {
	j := &memJournal{lostAck: 1}
	b := journaled(t, Config{Requests: 2, Window: 10 * time.Second}, j) // chunk 1
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Wait(ctx, EndpointIntrospect); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if err := b.Wait(short, EndpointIntrospect); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Wait = %v: the lost claim was not counted", err)
	}
}

// TestBudgetJournalAttachAfterUse: requests let through before the journal
// was attached are recorded with the first claim.
func TestBudgetJournalAttachAfterUse(t *testing.T) {
	cfg := Config{Requests: 4, Window: 10 * time.Second}
	j := &memJournal{}
	b := New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 2 {
		if err := b.Wait(ctx, EndpointIntrospect); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AttachJournal(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(ctx, EndpointIntrospect); err != nil {
		t.Fatal(err)
	}
	other := journaled(t, cfg, j)
	// 2 before the journal + a claim of 1 (chunk 1 of 4 is free... chunk is 1)
	// occupy 3: the other budget gets exactly one more.
	if err := other.Wait(ctx, EndpointIntrospect); err != nil {
		t.Fatal(err)
	}
	if d := other.Delay(EndpointIntrospect); d < 5*time.Second {
		t.Errorf("other budget Delay = %s after the window was spent, want about a window", d)
	}
}

// TestBudgetJournalLoadFailureStillSafe: a failed read at attach is
// reported, but the budget still checks every claim against the journal.
func TestBudgetJournalLoadFailureStillSafe(t *testing.T) {
	j := &memJournal{claims: map[string][]Claim{EndpointToken: {{ID: "x.1", At: time.Now(), Until: time.Now(), Slots: 1}}}}
	j.loadErr = errJournalDown
	b := New(Config{Requests: 1, Window: 10 * time.Second})
	if err := b.AttachJournal(context.Background(), j); !errors.Is(err, errJournalDown) {
		t.Fatalf("AttachJournal = %v, want the load error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := b.Wait(ctx, EndpointToken); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v: the recorded claim was not counted", err)
	}
}

// TestBudgetJournalWritesPerWindow measures journal writes for one endpoint
// spending at full rate.
func TestBudgetJournalWritesPerWindow(t *testing.T) {
	const n, w, windows = 20, 300 * time.Millisecond, 3
	j := &memJournal{}
	b := journaled(t, Config{Requests: n, Window: w}, j)
	var rec slots
	ctx, cancel := context.WithTimeout(context.Background(), windows*w)
	defer cancel()
	spend(ctx, b, 4, EndpointIntrospect, &rec).Wait()
	all := rec.snapshot()
	writes, _, _ := j.stats()
	if got := maxInWindow(all, w); got > n {
		t.Errorf("%d starts in one window, want <= %d", got, n)
	}
	if writes > len(all) {
		t.Errorf("%d writes for %d slots: a write must grant at least one", writes, len(all))
	}
	t.Logf("%d slots, %d journal writes in %d windows: %.1f writes per window (chunk %d of %d)",
		len(all), writes, windows, float64(writes)/windows, (n+3)/4, n)
}

// A backlog of one tenant waits in line (FIFO, as before the line was fair
// across tenants): each waiter is given its own place, the time the next slot
// not promised to an earlier waiter frees, instead of all coming back when the
// next slot frees; a waiter back at its place goes; places nobody came back
// for lapse.
func TestBudgetQueueGivesEachWaiterItsOwnSlot(t *testing.T) {
	b := New(Config{Requests: 10, Window: time.Second})
	ctx := context.Background()
	for range 10 {
		if err := b.Wait(ctx, "ep"); err != nil {
			t.Fatal(err)
		}
	}
	const maxBlock = 50 * time.Millisecond
	var prev time.Duration
	start := time.Now()
	var firstDue time.Time
	var places []time.Time
	for i := range 30 {
		d := b.Queue("ep", "ns", waiterID(i), maxBlock)
		if d <= maxBlock {
			t.Fatalf("waiter %d may go now (%v) with the window full", i, d)
		}
		if i == 0 {
			firstDue = time.Now().Add(d)
		}
		if d < prev-time.Millisecond {
			t.Fatalf("waiter %d comes back %v before waiter %d: the line is in order", i, prev-d, i-1)
		}
		prev = d
		places = append(places, time.Now().Add(d))
	}
	// The 10 starts came in a burst, so their slots free in a burst one
	// window later: 10 waiters per window, each window after the last.
	for i, p := range places {
		if want := start.Add(time.Duration(i/10+1) * time.Second); p.Before(want) {
			t.Errorf("waiter %d comes back at +%v, before its slot frees (+%v)", i, p.Sub(start), want.Sub(start))
		}
	}
	if got := maxInWindow(places, b.window-time.Millisecond); got > 10 {
		t.Errorf("%d places within one window: more waiters than slots", got)
	}
	if n := waiting(b, "ep"); n != 30 {
		t.Fatalf("line holds %d places, want 30", n)
	}
	if d := b.Queue("other", "ns", waiterID(0), maxBlock); d != 0 {
		t.Errorf("another endpoint waits %v behind this one's line", d)
	}
	// The first waiter comes back at its place and goes.
	time.Sleep(time.Until(firstDue))
	if d := b.Queue("ep", "ns", waiterID(0), 200*time.Millisecond); d != 0 {
		t.Fatalf("the first waiter, back at its place %v after the start, is told to wait %v more", time.Since(start), d)
	}
	if n := waiting(b, "ep"); n != 29 {
		t.Errorf("after the first waiter came back the line holds %d places, want 29", n)
	}
	// The rest of the first window's waiters come back and go too (their
	// slots freed together); then a newcomer queues behind the line.
	time.Sleep(time.Until(places[9]))
	for i := 1; i < 10; i++ {
		if d := b.Queue("ep", "ns", waiterID(i), 200*time.Millisecond); d != 0 {
			t.Fatalf("waiter %d, back at its place, is told to wait %v more", i, d)
		}
	}
	if n := waiting(b, "ep"); n != 20 {
		t.Errorf("after the first window's waiters came back the line holds %d places, want 20", n)
	}
	if d := b.Queue("ep", "ns", "newcomer", maxBlock); time.Now().Add(d).Before(places[29]) {
		t.Errorf("a newcomer is told to come back in %v, ahead of 29 waiters", d)
	}
	// A waiter back at its place that still cannot go (the budget was spent
	// elsewhere) keeps a place at the front, not at the back.
	for range 10 {
		if err := b.Wait(ctx, "ep"); err != nil {
			t.Fatal(err)
		}
	}
	b.mu.Lock()
	b.line["ep"].byID[waiterID(10)].promise = time.Now().Add(-time.Millisecond)
	back := b.line["ep"].byID["newcomer"].promise
	b.mu.Unlock()
	d := b.Queue("ep", "ns", waiterID(10), 0)
	if d <= 0 || time.Now().Add(d).After(back) {
		t.Errorf("a due waiter that cannot go is sent %v away, behind the line's last place", d)
	}
	if n := waiting(b, "ep"); n != 21 {
		t.Errorf("after a due waiter that cannot go came back the line holds %d places, want 21", n)
	}
	// Places nobody came back for lapse (after max(3 slots, 10 s)).
	b.mu.Lock()
	for _, w := range b.line["ep"].byID {
		w.promise = w.promise.Add(-time.Hour)
	}
	b.line["ep"].sweepAt = time.Time{}
	b.mu.Unlock()
	b.Queue("ep", "ns", "late", time.Hour)
	if n := waiting(b, "ep"); n != 0 {
		t.Errorf("lapsed places kept: %d", n)
	}
}

func TestBudgetQueueEmptyLineAndFreeBudgetGoesAtOnce(t *testing.T) {
	b := New(Config{Requests: 10, Window: time.Second})
	for i := range 10 {
		if d := b.Queue("ep", "ns", waiterID(i), time.Second); d != 0 {
			t.Fatalf("caller %d told to wait %v with budget free", i, d)
		}
	}
	if waiting(b, "ep") != 0 {
		t.Errorf("places given with budget free: %d", waiting(b, "ep"))
	}
}

// waiting is how many places the endpoint's line holds.
func waiting(b *Budget, endpoint string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l := b.line[endpoint]; l != nil {
		return len(l.byID)
	}
	return 0
}

// waiterID is the id of the i-th simulated waiter: each call of Queue in a
// test stands for its own object unless it reuses an id.
func waiterID(i int) string { return fmt.Sprintf("ns/conn-%d", i) }

// TestBudgetJournalReloadClosesOpenClaims: claims added to the journal from
// outside (an older journal imported) count once the Budget reloads, even
// against the claim it holds open: that claim was written without them.
func TestBudgetJournalReloadClosesOpenClaims(t *testing.T) {
	const n = 8 // claims of 2 slots
	j := &memJournal{}
	b := journaled(t, Config{Requests: n, Window: time.Minute}, j)
	ctx := context.Background()
	if err := b.Wait(ctx, EndpointCreateSession); err != nil { // opens a claim of 2, uses 1
		t.Fatal(err)
	}
	now := time.Now()
	j.set(func(m *memJournal) {
		m.claims[EndpointCreateSession] = append(m.claims[EndpointCreateSession],
			Claim{ID: "imported.1", At: now.Add(-time.Second), Until: now, Slots: n - 1})
		m.version++
	})
	if d := b.Delay(EndpointCreateSession); d != 0 {
		t.Fatalf("before the reload, Delay = %s: the open claim still has a slot", d)
	}
	if err := b.ReloadJournal(ctx); err != nil {
		t.Fatal(err)
	}
	// 1 used + 7 imported = 8: the window is full for a minute.
	if d := b.Delay(EndpointCreateSession); d < 50*time.Second {
		t.Errorf("after the reload, Delay = %s, want about a minute", d)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := b.Wait(wctx, EndpointCreateSession); err == nil {
		t.Error("Wait got a slot from the closed claim")
	}
}
