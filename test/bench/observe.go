package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// waitMetrics waits until the operator's metrics endpoint answers; with
// controllers, until it has the FinchConnection controller's metrics (a
// standby replica has none until it leads).
func waitMetrics(ctx context.Context, op operator, timeout time.Duration, controllers bool) error {
	var lastErr error
	err := poll(ctx, 100*time.Millisecond, timeout, func() (bool, error) {
		select {
		case <-op.Done():
			return false, fmt.Errorf("%s exited while starting (see its log)", op.Name())
		default:
		}
		m, err := scrape(ctx, op.MetricsURL())
		if lastErr = err; err == nil && controllers && !m.has("controller_runtime_max_concurrent_reconciles", "controller", "finchconnection") {
			lastErr = errors.New("no FinchConnection controller metrics")
		}
		return lastErr == nil, nil
	})
	return timedOut(err, "%s metrics not up after %v: %w", op.Name(), timeout, lastErr)
}

// waitAppsReady waits for the FinchApps in the namespaces to report Ready=True.
func waitAppsReady(ctx context.Context, h *harness, timeout time.Duration, namespaces ...string) error {
	deadline := time.Now().Add(timeout)
	for _, ns := range namespaces {
		err := poll(ctx, 200*time.Millisecond, time.Until(deadline), func() (bool, error) {
			app := &finchv1.FinchApp{}
			err := h.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: appA}, app)
			// NotFound: not created in this run.
			return apierrors.IsNotFound(err) || err == nil && meta.IsStatusConditionTrue(app.Status.Conditions, finchv1.ConditionReady), nil
		})
		if err := timedOut(err, "FinchApp %s/%s not Ready after %v", ns, appA, timeout); err != nil {
			return err
		}
	}
	return nil
}

// waitQuiet waits until the operator has nothing to do: both work queues
// empty, no reconcile running, and reconcile and Finch call totals unchanged
// for `stable`. It returns the last scrape.
func waitQuiet(ctx context.Context, op operator, stable, timeout time.Duration) (metricSet, error) {
	var sig string
	var since time.Time
	var m metricSet
	err := poll(ctx, 250*time.Millisecond, timeout, func() (bool, error) {
		var err error
		if m, err = scrape(ctx, op.MetricsURL()); err != nil {
			return false, nil
		}
		busy := m.sum("workqueue_depth") + m.sum("controller_runtime_active_workers")
		s := fmt.Sprintf("%v/%v/%v", busy, m.sum("controller_runtime_reconcile_total"), m.sum("finch_api_requests_total"))
		if busy != 0 || s != sig {
			sig, since = s, time.Now()
			return false, nil
		}
		return time.Since(since) >= stable, nil
	})
	return m, timedOut(err, "%s not quiet after %v (last: %s)", op.Name(), timeout, sig)
}

// waitResync polls a freshly started operator until it has reconciled every
// object once (reconcile total >= objects above base), its queue is empty and
// the total has not moved for `stable`. It returns the time from process
// start to the beginning of that stable period.
func waitResync(ctx context.Context, op operator, base float64, objects int, stable, timeout time.Duration) (time.Duration, metricSet, error) {
	lastTotal := -1.0
	var since time.Time
	var m metricSet
	err := poll(ctx, 100*time.Millisecond, timeout, func() (bool, error) {
		select {
		case <-op.Done():
			return false, fmt.Errorf("%s exited", op.Name())
		default:
		}
		var err error
		if m, err = scrape(ctx, op.MetricsURL()); err != nil {
			return false, nil
		}
		tot := reconciles(m, "finchconnection") - base
		depth := m.sum("workqueue_depth", "name", "finchconnection") + m.sum("controller_runtime_active_workers", "controller", "finchconnection")
		switch {
		case tot < float64(objects) || depth != 0:
			lastTotal = -1
		case tot != lastTotal:
			lastTotal, since = tot, time.Now()
		default:
			return time.Since(since) >= stable, nil
		}
		return false, nil
	})
	return since.Sub(op.Started()), m, timedOut(err, "no resync within %v", timeout)
}

// memSample is the operator's memory at one moment.
type memSample struct {
	rss, hwm  int64
	heapInuse float64
	afterGC   bool // a GC cycle completed after the operator went quiet
}

// memoryAfterGC waits (up to timeout) for the Go runtime to finish a GC cycle
// after `from` (the quiet point), so heap in use is close to the live heap of
// an idle operator, then reads RSS and heap. An idle Go process runs a GC at
// least every 2 minutes.
func memoryAfterGC(ctx context.Context, op operator, from metricSet, timeout time.Duration) (memSample, error) {
	gc0 := from.sum("go_gc_duration_seconds_count")
	var m metricSet
	var err error
	perr := poll(ctx, time.Second, timeout, func() (bool, error) {
		m, err = scrape(ctx, op.MetricsURL())
		return err == nil && m.sum("go_gc_duration_seconds_count") > gc0, nil
	})
	if perr != nil && !errors.Is(perr, errTimeout) {
		return memSample{}, perr
	}
	if m == nil {
		return memSample{}, fmt.Errorf("no metrics: %w", err)
	}
	s := memSample{heapInuse: m.sum("go_memstats_heap_inuse_bytes"), afterGC: perr == nil}
	if op.PID() != 0 {
		s.rss, s.hwm, err = procStatus(op.PID())
	}
	return s, err
}

// procStatus reads VmRSS and VmHWM (bytes) of a process.
func procStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v * 1024
		case "VmHWM:":
			hwm = v * 1024
		}
	}
	return rss, hwm, err
}

// procStat is the command name, parent PID and user+system CPU time of a process.
func procStat(pid int) (name string, ppid int, cpu time.Duration, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", 0, 0, err
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return "", 0, 0, errors.New("bad stat")
	}
	f := strings.Fields(s[j+1:]) // the fields after the parenthesised command name
	if len(f) < 13 {
		return "", 0, 0, errors.New("short stat")
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return s[i+1 : j], ppid, time.Duration(ut+st) * time.Second / clkTck, nil
}

// cpuSnapshot is the CPU time used so far by the bench and its child
// processes (kube-apiserver, etcd, manager), by command name.
type cpuSnapshot map[string]time.Duration

func takeCPU() cpuSnapshot {
	out := cpuSnapshot{}
	self := os.Getpid()
	if _, _, d, err := procStat(self); err == nil {
		out["bench+sim"] = d
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		name, ppid, d, err := procStat(pid)
		if err != nil || ppid != self {
			continue
		}
		if name == "manager" || strings.HasPrefix(name, "finch-bench-ma") {
			name = "manager"
		}
		out[name] += d
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

// seconds is the CPU time of the named processes (all without names).
func (a cpuSnapshot) seconds(names ...string) float64 {
	t := 0.0
	for k, v := range a {
		if len(names) == 0 || slices.Contains(names, k) {
			t += v.Seconds()
		}
	}
	return t
}

func (a cpuSnapshot) String() string {
	var parts []string
	for _, k := range []string{"manager", "kube-apiserver", "etcd", "bench+sim"} {
		if v, ok := a[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1fs", k, v.Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}

// loadAvg is the load average of the machine (1, 5, 15 minutes).
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
