package budget

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"testing"
	"testing/synctest"
	"time"
)

// spreadStarts fills endpoint's window with one start per slot interval, the
// last just now, so that slot k (from 0) frees about k+1 intervals from now:
// a waiter's delay tells its slot (slotOf). It returns the interval.
func spreadStarts(b *Budget, endpoint string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.cfg.Requests
	interval := b.window / time.Duration(n)
	now := time.Now()
	ts := make([]time.Time, n)
	for i := range ts {
		ts[i] = now.Add(-b.window + time.Duration(i+1)*interval - time.Millisecond)
	}
	b.starts[endpoint] = ts
	return interval
}

// slotOf is the slot (from 0) a delay returned by Queue after spreadStarts
// stands for.
func slotOf(d, interval time.Duration) int { return int(d / interval) }

func tenantID(tenant string, i int) string { return fmt.Sprintf("%s/conn-%d", tenant, i) }

// fairPosition is waiter id's place in the fair order (-1: not waiting).
func fairPosition(b *Budget, endpoint, id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.line[endpoint]
	if l == nil || l.byID[id] == nil {
		return -1
	}
	w := l.byID[id]
	return l.position(w.tenant, w.index())
}

// queueBulkAndSmall queues 5,000 waiters of tenant bulk, then 5 of small, on
// a budget of 20 per minute whose slots free one at a time.
func queueBulkAndSmall(tb testing.TB, maxBlock time.Duration) (*Budget, time.Duration, []time.Duration) {
	tb.Helper()
	b := New(Config{Requests: 20, Window: time.Minute})
	interval := spreadStarts(b, "ep")
	for i := range 5000 {
		if d := b.Queue("ep", "bulk", tenantID("bulk", i), maxBlock); d <= maxBlock {
			tb.Fatalf("bulk waiter %d may go (%v) with the window full", i, d)
		}
	}
	small := make([]time.Duration, 5)
	for j := range small {
		small[j] = b.Queue("ep", "small", tenantID("small", j), maxBlock)
	}
	return b, interval, small
}

// One namespace's 5,000 connections do not make another's 5 wait behind all
// of them: the 5 get every other slot from the second on, and bulk's order
// among itself stays FIFO.
func TestBudgetQueueFairAcrossTenants(t *testing.T) {
	const maxBlock = 100 * time.Millisecond
	b := New(Config{Requests: 20, Window: time.Minute})
	interval := spreadStarts(b, "ep")
	var prev time.Duration
	for i := range 5000 {
		d := b.Queue("ep", "bulk", tenantID("bulk", i), maxBlock)
		if d <= maxBlock {
			t.Fatalf("bulk waiter %d may go (%v) with the window full", i, d)
		}
		if d < prev {
			t.Fatalf("bulk waiter %d comes back %v before waiter %d", i, prev-d, i-1)
		}
		prev = d
	}
	if k := slotOf(prev, interval); k != 4999 {
		t.Errorf("bulk's last waiter has slot %d, want 4999 (one per slot)", k)
	}
	for j := range 5 {
		id := tenantID("small", j)
		d := b.Queue("ep", "small", id, maxBlock)
		if p := fairPosition(b, "ep", id); p != 2*j+1 {
			t.Errorf("small waiter %d at position %d, want %d (every other slot)", j, p, 2*j+1)
		}
		if k := slotOf(d, interval); k > 11 {
			t.Errorf("small waiter %d comes back in %v, slot %d: want within the first 12 slots (FIFO: slot %d)", j, d, k, 5000+j)
		}
	}
	// Bulk's waiters coming back early learn their places, one slot later
	// for each small waiter put ahead of them, still in FIFO order.
	prev = 0
	for i := range 5000 {
		d := b.Queue("ep", "bulk", tenantID("bulk", i), maxBlock)
		if d < prev {
			t.Fatalf("bulk waiter %d comes back %v before waiter %d", i, prev-d, i-1)
		}
		prev = d
		if want := i + min(i, 5); slotOf(d, interval) != want {
			t.Fatalf("bulk waiter %d has slot %d, want %d", i, slotOf(d, interval), want)
		}
	}
	if n := waiting(b, "ep"); n != 5005 {
		t.Errorf("line holds %d places, want 5005", n)
	}
}

// Three tenants interleave round robin, whatever order they queued in.
func TestBudgetQueueRoundRobinThreeTenants(t *testing.T) {
	const maxBlock = 100 * time.Millisecond
	b := New(Config{Requests: 20, Window: time.Minute})
	interval := spreadStarts(b, "ep")
	var ids []string
	for _, tq := range []struct {
		name string
		n    int
	}{{"x", 4}, {"y", 3}, {"z", 2}} {
		for i := range tq.n {
			id := tenantID(tq.name, i)
			ids = append(ids, id)
			b.Queue("ep", tq.name, id, maxBlock)
		}
	}
	want := []string{"x/conn-0", "y/conn-0", "z/conn-0", "x/conn-1", "y/conn-1", "z/conn-1", "x/conn-2", "y/conn-2", "x/conn-3"}
	// Each comes back early and learns its place.
	at := map[string]time.Duration{}
	for _, id := range ids {
		tenant, _, _ := cutID(id)
		at[id] = b.Queue("ep", tenant, id, maxBlock)
	}
	got := slices.Clone(ids)
	sort.SliceStable(got, func(i, j int) bool { return at[got[i]] < at[got[j]] })
	if !slices.Equal(got, want) {
		t.Errorf("order of places = %v, want %v", got, want)
	}
	for p, id := range want {
		if fp := fairPosition(b, "ep", id); fp != p {
			t.Errorf("%s at position %d, want %d", id, fp, p)
		}
		if k := slotOf(at[id], interval); k != p {
			t.Errorf("%s has slot %d, want %d", id, k, p)
		}
	}
}

func cutID(id string) (tenant, name string, ok bool) {
	for i := range id {
		if id[i] == '/' {
			return id[:i], id[i+1:], true
		}
	}
	return "", id, false
}

// A waiter coming back early keeps its one place: the same time, or a later
// one once another tenant's waiter was put ahead of it; never a second place.
func TestBudgetQueueComebackKeepsOnePlace(t *testing.T) {
	const maxBlock = 100 * time.Millisecond
	b := New(Config{Requests: 20, Window: time.Minute})
	interval := spreadStarts(b, "ep")
	var place time.Time
	for i := range 5 {
		d := b.Queue("ep", "a", tenantID("a", i), maxBlock)
		if i == 2 {
			place = time.Now().Add(d)
		}
	}
	for range 10 {
		d := b.Queue("ep", "a", tenantID("a", 2), maxBlock)
		if at := time.Now().Add(d); at.Before(place.Add(-time.Millisecond)) {
			t.Fatalf("a waiter back early is given %v, before its place", place.Sub(at))
		}
		if n := waiting(b, "ep"); n != 5 {
			t.Fatalf("line holds %d places after a waiter came back early, want 5", n)
		}
	}
	// Another tenant's first waiter goes second; a/conn-2 moves one slot.
	b.Queue("ep", "b", tenantID("b", 0), maxBlock)
	d := b.Queue("ep", "a", tenantID("a", 2), maxBlock)
	if at := time.Now().Add(d); at.Before(place.Add(interval / 2)) {
		t.Errorf("after another tenant's waiter went ahead, a/conn-2 comes back %v after its old place, want a slot (%v) later", at.Sub(place), interval)
	}
	if n := waiting(b, "ep"); n != 6 {
		t.Errorf("line holds %d places, want 6", n)
	}
	// A lone waiter asking again and again has one place.
	b2 := New(Config{Requests: 20, Window: time.Minute})
	spreadStarts(b2, "ep")
	first := b2.Queue("ep", "a", "a/x", maxBlock)
	for range 10 {
		if d := b2.Queue("ep", "a", "a/x", maxBlock); d > first || d <= maxBlock {
			t.Fatalf("a lone waiter asking again is told %v, first %v", d, first)
		}
	}
	if n := waiting(b2, "ep"); n != 1 {
		t.Errorf("a lone waiter asking 11 times holds %d places, want 1", n)
	}
}

// A waiter whose owner never came back (its object was deleted) lapses, at
// the front of its tenant's queue or behind it, and no longer delays anyone.
func TestBudgetQueueLapsedEntryNoLongerDelays(t *testing.T) {
	const maxBlock = 100 * time.Millisecond
	b := New(Config{Requests: 20, Window: time.Minute})
	interval := spreadStarts(b, "ep")
	for i := range 3 {
		b.Queue("ep", "a", tenantID("a", i), maxBlock)
	}
	for i := range 3 {
		b.Queue("ep", "b", tenantID("b", i), maxBlock)
	}
	// Fair order: a0 b0 a1 b1 a2 b2.
	if p := fairPosition(b, "ep", "a/conn-2"); p != 4 {
		t.Fatalf("a/conn-2 at position %d, want 4", p)
	}
	before := b.Queue("ep", "b", "b/conn-2", maxBlock)
	if k := slotOf(before, interval); k != 5 {
		t.Fatalf("b/conn-2 has slot %d, want 5", k)
	}
	// a/conn-1's promise passed 11 s ago (lapse: max(3 slots, 10 s)); b/conn-0's
	// 9 s ago, which it may still come back for.
	b.mu.Lock()
	l := b.line["ep"]
	l.byID["a/conn-1"].promise = time.Now().Add(-11 * time.Second)
	l.byID["b/conn-0"].promise = time.Now().Add(-9 * time.Second)
	l.sweepAt = time.Time{}
	b.mu.Unlock()
	after := b.Queue("ep", "b", "b/conn-2", maxBlock)
	if k := slotOf(after, interval); k != 4 {
		t.Errorf("b/conn-2 has slot %d once a/conn-1 lapsed, want 4", k)
	}
	if p := fairPosition(b, "ep", "a/conn-2"); p != 2 {
		t.Errorf("a/conn-2 at position %d once a/conn-1 lapsed, want 2", p)
	}
	if fairPosition(b, "ep", "a/conn-1") != -1 {
		t.Error("the lapsed waiter is still in line")
	}
	if fairPosition(b, "ep", "b/conn-0") != 1 {
		t.Error("a waiter 9 s past its place lapsed: want 10 s")
	}
	if n := waiting(b, "ep"); n != 5 {
		t.Errorf("line holds %d places, want 5", n)
	}
	// A lapsed head: the one behind it in its tenant is first (the tenant
	// was not served, so it keeps its turn).
	b.mu.Lock()
	l.byID["a/conn-0"].promise = time.Now().Add(-time.Hour)
	l.sweepAt = time.Time{}
	b.mu.Unlock()
	if d := b.Queue("ep", "a", "a/conn-2", maxBlock); slotOf(d, interval) != 0 {
		t.Errorf("behind a lapsed head, a/conn-2 has slot %d, want 0", slotOf(d, interval))
	}
	if d := b.Queue("ep", "b", "b/conn-0", maxBlock); slotOf(d, interval) != 1 {
		t.Errorf("behind a lapsed head, b/conn-0 has slot %d, want 1", slotOf(d, interval))
	}
}

// Once places come due, the waiters coming back get 0 in the fair order and
// their Waits go through within the budget. Slots free one at a time, so a
// tenant whose waiter was second in line is never overtaken by the next
// waiter of the tenant just served.
func TestBudgetQueueDuePlacesGoInFairOrder(t *testing.T) {
	// In a synctest bubble the clock moves only when every goroutine waits, so
	// the order is the budget's, not the scheduler's (it failed on a loaded machine).
	synctest.Test(t, func(t *testing.T) {
		const n, w, maxBlock = 5, 500 * time.Millisecond, 20 * time.Millisecond
		b := New(Config{Requests: n, Window: w})
		spreadStarts(b, "ep")
		type waiter struct {
			tenant, id string
			rank       int // in the fair order
			due        time.Time
		}
		var ws []*waiter
		want := []string{"a/conn-0", "b/conn-0", "c/conn-0", "a/conn-1", "b/conn-1", "c/conn-1", "a/conn-2", "b/conn-2", "a/conn-3", "a/conn-4", "a/conn-5", "a/conn-6", "a/conn-7"}
		for _, tq := range []struct {
			name string
			n    int
		}{{"a", 8}, {"b", 3}, {"c", 2}} {
			for i := range tq.n {
				id := tenantID(tq.name, i)
				d := b.Queue("ep", tq.name, id, maxBlock)
				if d <= maxBlock {
					t.Fatalf("%s may go (%v) with the window full", id, d)
				}
				ws = append(ws, &waiter{tenant: tq.name, id: id, rank: slices.Index(want, id), due: time.Now().Add(d)})
			}
		}
		var served []string
		var starts []time.Time
		early := 0
		ctx := context.Background()
		deadline := time.Now().Add(5 * time.Second)
		for len(ws) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("timed out; served %v", served)
			}
			now := time.Now()
			var due []*waiter
			for _, x := range ws {
				if !x.due.After(now) {
					due = append(due, x)
				}
			}
			sort.Slice(due, func(i, j int) bool {
				if !due[i].due.Equal(due[j].due) {
					return due[i].due.Before(due[j].due)
				}
				return due[i].rank < due[j].rank
			})
			for _, x := range due {
				d := b.Queue("ep", x.tenant, x.id, maxBlock)
				if d > 0 {
					if d <= maxBlock {
						t.Fatalf("%s told to come back in %v, within maxBlock", x.id, d)
					}
					early++
					x.due = time.Now().Add(d)
					continue
				}
				wctx, cancel := context.WithTimeout(ctx, maxBlock+100*time.Millisecond)
				err := b.Wait(wctx, "ep")
				cancel()
				if err != nil {
					t.Fatalf("%s told to go, Wait: %v", x.id, err)
				}
				starts = append(starts, time.Now())
				served = append(served, x.id)
				ws = slices.DeleteFunc(ws, func(y *waiter) bool { return y == x })
			}
			time.Sleep(2 * time.Millisecond)
		}
		if !slices.Equal(served, want) {
			t.Errorf("served %v, want %v", served, want)
		}
		if got := maxInWindow(starts, w); got > n {
			t.Errorf("%d starts in one window, want <= %d", got, n)
		}
		if n := waiting(b, "ep"); n != 0 {
			t.Errorf("line holds %d places after everyone went", n)
		}
		t.Logf("%d waiters served in %v, %d early returns (told a later place)", len(served), starts[len(starts)-1].Sub(starts[0]), early)
	})
}

// TestBudgetQueueFairnessFigures prints (asserts nothing about timing) where
// the small tenant's last waiter stands with 5,000 of another tenant ahead,
// fair and FIFO, what a waiter costs in memory, and what Queue costs with
// that line.
func TestBudgetQueueFairnessFigures(t *testing.T) {
	const maxBlock = 100 * time.Millisecond
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	b, interval, small := queueBulkAndSmall(t, maxBlock)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	last := small[len(small)-1]
	b.mu.Lock()
	fifo := time.Until(b.freeSlotLocked("ep", time.Now(), 5004))
	b.mu.Unlock()
	t.Logf("budget 20/1m: slot interval %v", interval)
	t.Logf("small's last waiter (5,000 bulk queued first): fair position %d, slot %d, delay %v; FIFO position 5004, slot %d, delay %v",
		fairPosition(b, "ep", "small/conn-4"), slotOf(last, interval), last.Round(time.Millisecond), slotOf(fifo, interval), fifo.Round(time.Second))
	t.Logf("memory: %d bytes per waiting entry (ids included, %d entries)", int64(m1.HeapAlloc-m0.HeapAlloc)/5005, waiting(b, "ep"))

	const calls = 50000
	start := time.Now()
	for i := range calls {
		b.Queue("ep", "bulk", tenantID("bulk", i%5000), maxBlock)
	}
	bulk := time.Since(start) / calls
	start = time.Now()
	for i := range calls {
		b.Queue("ep", "small", tenantID("small", i%5), maxBlock)
	}
	sm := time.Since(start) / calls
	t.Logf("Queue with a 5,005-entry line: %d ns/op (bulk waiter back early), %d ns/op (small waiter back early), id formatting included", bulk.Nanoseconds(), sm.Nanoseconds())
}

func BenchmarkBudgetQueueLine5000(bm *testing.B) {
	const maxBlock = 100 * time.Millisecond
	b, interval, small := queueBulkAndSmall(bm, maxBlock)
	ids := make([]string, 5000)
	for i := range ids {
		ids[i] = tenantID("bulk", i)
	}
	bm.Run("bulk-comeback", func(bm *testing.B) {
		for i := 0; bm.Loop(); i++ {
			b.Queue("ep", "bulk", ids[i%len(ids)], maxBlock)
		}
		bm.ReportMetric(float64(slotOf(small[4], interval)), "small-last-slot")
		bm.ReportMetric(5004, "fifo-small-last-slot")
	})
	bm.Run("small-comeback", func(bm *testing.B) {
		for bm.Loop() {
			b.Queue("ep", "small", "small/conn-4", maxBlock)
		}
	})
}
