package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// quietState is what waitQuiet saw when the operator settled.
type quietState struct {
	metrics metricSet
	at      time.Time // when the stable period began
}

// waitQuiet waits until the operator has nothing to do: both work queues
// empty, no reconcile running, and reconcile and Finch call totals unchanged
// for `stable`.
func waitQuiet(ctx context.Context, op operator, stable, timeout time.Duration) (quietState, error) {
	deadline := time.Now().Add(timeout)
	var sig string
	var since time.Time
	for {
		m, err := scrape(ctx, op.MetricsURL())
		if err == nil {
			busy := m.sum("workqueue_depth") + m.sum("controller_runtime_active_workers")
			s := fmt.Sprintf("%v/%v/%v", busy, m.sum("controller_runtime_reconcile_total"), m.sum("finch_api_requests_total"))
			if busy == 0 && s == sig {
				if time.Since(since) >= stable {
					return quietState{metrics: m, at: since}, nil
				}
			} else {
				sig, since = s, time.Now()
			}
		}
		if time.Now().After(deadline) {
			return quietState{}, fmt.Errorf("%s not quiet after %v (last: %s, err %v)", op.Name(), timeout, sig, err)
		}
		select {
		case <-ctx.Done():
			return quietState{}, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// memSample is the operator's memory at one moment.
type memSample struct {
	rss, hwm  int64
	heapInuse float64
	heapAlloc float64
	afterGC   bool // a GC cycle completed after the operator went quiet
	waited    time.Duration
}

// memoryAfterGC waits (up to timeout) for the Go runtime to finish a GC cycle
// after `from` (the quiet point), so heap in use is close to the live heap of
// an idle operator, then reads RSS and heap. An idle Go process runs a GC at
// least every 2 minutes.
func memoryAfterGC(ctx context.Context, op operator, from metricSet, timeout time.Duration) (memSample, error) {
	start := time.Now()
	gc0 := from.sum("go_gc_duration_seconds_count")
	var m metricSet
	var err error
	afterGC := false
	for time.Since(start) < timeout {
		m, err = scrape(ctx, op.MetricsURL())
		if err == nil && m.sum("go_gc_duration_seconds_count") > gc0 {
			afterGC = true
			break
		}
		select {
		case <-ctx.Done():
			return memSample{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if m == nil {
		return memSample{}, fmt.Errorf("no metrics: %v", err)
	}
	s := memSample{
		heapInuse: m.sum("go_memstats_heap_inuse_bytes"),
		heapAlloc: m.sum("go_memstats_heap_alloc_bytes"),
		afterGC:   afterGC,
		waited:    time.Since(start),
	}
	if op.PID() != 0 {
		s.rss, s.hwm, err = procStatus(op.PID())
		if err != nil {
			return s, err
		}
	}
	return s, nil
}

// cpuSnapshot is the CPU time used so far by the bench and its child
// processes (kube-apiserver, etcd, manager), by command name.
type cpuSnapshot map[string]time.Duration

func takeCPU() cpuSnapshot {
	out := cpuSnapshot{}
	self := os.Getpid()
	if d, err := procCPU(self); err == nil {
		out["bench+sim"] = d
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if i < 0 || j < 0 {
			continue
		}
		f := strings.Fields(s[j+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if ppid != self {
			continue
		}
		name := s[i+1 : j]
		if name == "manager" || strings.HasPrefix(name, "finch-bench-ma") {
			name = "manager"
		}
		if d, err := procCPU(pid); err == nil {
			out[name] += d
		}
	}
	return out
}

func (a cpuSnapshot) since(b cpuSnapshot) cpuSnapshot {
	out := cpuSnapshot{}
	for k, v := range a {
		if d := v - b[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func (a cpuSnapshot) String() string {
	keys := []string{"manager", "kube-apiserver", "etcd", "bench+sim"}
	var parts []string
	for _, k := range keys {
		if v, ok := a[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1fs", k, v.Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}

// loadAvg is the 1-minute load average of the machine.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
