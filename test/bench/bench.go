package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/connectops/finch-operator/pkg/finchsim"
)

type benchConfig struct {
	common
	busyConfig
	backlogConfig
	gcWait       time.Duration
	bareQPS      float64 // <= 0: unthrottled
	bareEvents   bool    // also measure the bare client plus one Event per object
	econN        int
	econRequests int
	econWindow   time.Duration
	skip         map[string]bool
	cpuProfile   string
	memProfile   string
	pprof        bool // profile the manager process through --pprof-bind-address
	pprofSeconds int
}

func (b *benchConfig) bindFlags() {
	b.busyConfig.bindFlags()
	b.backlogConfig.bindFlags()
	flag.DurationVar(&b.gcWait, "gc-wait", 130*time.Second, "how long to wait for a GC cycle before reading heap in use")
	flag.Float64Var(&b.bareQPS, "bare-qps", 0, "client-side QPS of the bare client (0: unthrottled)")
	flag.BoolVar(&b.bareEvents, "bare-events", false, "also run the bare client with one Event per object (what the operator's SessionCreated Event costs)")
	flag.IntVar(&b.econN, "econ-n", 0, "FinchConnections in the economy phase (default N, at most 10000: budget use does not change with more, and 50,000 at 600 per 10 s would add 14 minutes)")
	flag.IntVar(&b.econRequests, "econ-requests", 600, "economy budget: requests per window (FinchApp.spec.rateLimit and simulator limit)")
	flag.DurationVar(&b.econWindow, "econ-window", 10*time.Second, "economy budget window")
	b.skip = map[string]bool{}
	flag.Func("skip", "comma-separated phases to skip: bare,busy,memory,storm,restart,econ,backlog", func(v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				b.skip[s] = true
			}
		}
		return nil
	})
	flag.StringVar(&b.cpuProfile, "cpuprofile", "", "write a CPU profile of the bench process (use with -in-process)")
	flag.StringVar(&b.memProfile, "memprofile", "", "write a heap profile at the end (use with -in-process)")
	flag.BoolVar(&b.pprof, "pprof", false, "bench: profile the manager process via --pprof-bind-address (CPU during phase A, heap after it) into the run dir")
	flag.IntVar(&b.pprofSeconds, "pprof-seconds", 30, "bench: length of the CPU profile from the start of phase A")
}

const (
	nsBare = "bench-bare"
	nsMain = "bench"
	nsEcon = "bench-econ"
	appA   = "default"
)

// run is `make bench`: scale and Finch economy.
func (cfg benchConfig) run(ctx context.Context) *report {
	if cfg.n == 0 {
		cfg.n = 2000
	}
	if cfg.econN == 0 {
		cfg.econN = min(cfg.n, 10000)
	}
	if cfg.timeout == 0 {
		cfg.timeout = 90 * time.Minute
	}
	rep := newReport(fmt.Sprintf("finch-operator bench (N=%d)", cfg.n), cfg.common)
	if cfg.inProcess {
		rep.Meta["note"] = "in-process mode: memory, CPU and the time ratio include the bench and simulator; use it for profiles only"
	}
	if err := bench(ctx, cfg, rep); err != nil {
		rep.fail("%v", err)
	}
	return rep
}

// benchRun is one bench: its phases run in order and share what they measured.
type benchRun struct {
	benchConfig
	*harness
	rep        *report
	simA, simE *simServer // the throughput app's and the economy app's Finch
	addrs      managerAddrs
	op         operator
	keys       []types.NamespacedName // phase A's connections
	bare       bareResult
	base       memSample // memory before phase A
	quietA     metricSet // the operator's metrics once idle after phase A
}

func bench(ctx context.Context, cfg benchConfig, rep *report) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	stopProfile, err := startCPUProfile(cfg.cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	h, ctx, err := startHarness(ctx, cfg.common)
	if err != nil {
		return err
	}
	defer h.close()
	b := &benchRun{benchConfig: cfg, harness: h, rep: rep}
	for _, p := range []struct {
		skip, label string
		run         func(context.Context) error
	}{
		{"bare", "bare client", b.bareClient},
		{"", "", b.startOperator},
		{"busy", "busy cluster", b.busy},
		{"", "", b.phaseA},
		{"memory", "", b.memory},
		{"storm", "webhook storm", b.storm},
		{"restart", "", b.restart},
		{"econ", "economy", b.economy},
		{"backlog", "backlog", b.backlog},
	} {
		if cfg.skip[p.skip] {
			continue
		}
		if err := p.run(ctx); err != nil && p.label != "" {
			return fmt.Errorf("%s: %w", p.label, err)
		} else if err != nil {
			return err
		}
	}
	if cfg.memProfile != "" && cfg.inProcess {
		writeHeapProfile(cfg.memProfile)
	}
	return nil
}

// startOperator starts the simulators, the FinchApps and the manager, and
// waits until it is idle; then (unless skipped) it reads baseline memory.
func (b *benchRun) startOperator(ctx context.Context) error {
	var err error
	if b.simA, err = b.startSim(); err != nil {
		return err
	}
	if b.simE, err = b.startSim(); err != nil {
		return err
	}
	if b.addrs, err = newAddrs(); err != nil {
		return err
	}
	// The throughput app's budget is set out of the way (the simulator has no
	// limit for it): phase A measures the operator and the API server, the
	// economy phase measures the budget.
	if err := b.createApp(ctx, nsMain, b.simA, finchsim.AppConfig{ClientID: "bench-a", ClientSecret: "bench-a-secret",
		WebhookURL: "http://" + b.addrs.inbound + "/webhooks/" + nsMain + "/" + appA, WebhookSecret: webhookSecret()},
		finchsim.RateLimit{Requests: 100000, Window: time.Second}); err != nil {
		return err
	}
	if econ := (finchsim.RateLimit{Requests: b.econRequests, Window: b.econWindow}); !b.skip["econ"] {
		if err := b.createApp(ctx, nsEcon, b.simE, finchsim.AppConfig{ClientID: "bench-e", ClientSecret: "bench-e-secret", RateLimit: econ}, econ); err != nil {
			return err
		}
	}
	logf("starting manager")
	if err := b.startManager(); err != nil {
		return err
	}
	b.onClose(func() {
		if b.op != nil {
			_ = b.op.Stop(syscall.SIGTERM, 30*time.Second)
		}
	})
	if err := waitMetrics(ctx, b.op, 60*time.Second, true); err != nil {
		return err
	}
	// Both FinchApps Ready before anything is measured.
	if err := waitAppsReady(ctx, b.harness, 60*time.Second, nsMain, nsEcon); err != nil {
		return err
	}
	q0, err := waitQuiet(ctx, b.op, 2*time.Second, 60*time.Second)
	if err != nil || b.skip["memory"] {
		return err
	}
	logf("baseline memory (waiting up to %v for a GC cycle)", b.gcWait)
	b.base, err = memoryAfterGC(ctx, b.op, q0, b.gcWait)
	return err
}

func (b *benchRun) startManager() (err error) {
	args := b.managerArgs
	if b.pprof && !b.inProcess {
		args = append([]string{"--pprof-bind-address=" + b.addrs.pprof}, args...)
	}
	b.op, err = b.launch.start("manager", b.addrs, args)
	return err
}

// mark is where a phase starts from.
type mark struct {
	metrics metricSet      // the manager's
	calls   map[string]int // the simulator's
	cpu     cpuSnapshot
	load    string
	at      time.Time
}

func (b *benchRun) mark(ctx context.Context, sim *simServer) (mark, error) {
	m, err := scrape(ctx, b.op.MetricsURL())
	return mark{metrics: m, calls: sim.CallCounts(), cpu: takeCPU(), load: loadAvg(), at: time.Now()}, err
}

// phaseA creates N FinchConnections and waits for all to be AwaitingConnect.
func (b *benchRun) phaseA(ctx context.Context) error {
	logf("phase A: creating %d FinchConnections", b.n)
	s, err := b.mark(ctx, b.simA)
	if err != nil {
		return err
	}
	profiled := b.profileCPU(ctx)
	if err := createConns(ctx, b.c, nsMain, "conn", b.n, b.workers, 0, nil); err != nil {
		return err
	}
	createdAt := time.Since(s.at)
	b.keys = keysFor(nsMain, "conn", b.n)
	if err := b.tr.waitCount(ctx, "phase A AwaitingConnect", b.keys, (*connState).awaiting, 10*time.Minute+time.Duration(b.n)*100*time.Millisecond); err != nil {
		return err
	}
	opTime := b.tr.latest(b.keys, tAwaiting).Sub(s.at)
	if b.quietA, err = waitQuiet(ctx, b.op, 2*time.Second, 2*time.Minute); err != nil {
		return err
	}
	profiled()
	b.reportA(s, createdAt, opTime)
	return nil
}

func (b *benchRun) reportA(s mark, createdAt, opTime time.Duration) {
	cpu := takeCPU().since(s.cpu)
	calls := diff(b.simA.CallCounts(), s.calls)
	reqs := diff(apiRequests(b.quietA), apiRequests(s.metrics))
	sessions := calls[finchsim.EndpointCreateSession]
	r, n := b.rep, b.n
	r.add("phase A", "create N FinchConnections (bench client)", secs(createdAt))
	r.add("phase A", "time until all AwaitingConnect", fmt.Sprintf("%s (%.0f/s)", secs(opTime), float64(n)/opTime.Seconds()))
	if b.bare.total > 0 {
		ratio := opTime.Seconds() / b.bare.total.Seconds()
		r.goal("phase A", "operator / bare client", fmt.Sprintf("%.2fx", ratio), "<= 1.25x", ratio <= 1.25)
	}
	r.goal("phase A", "Finch calls per FinchConnection", perConn(calls, n, nil),
		"1 session call, nothing else", sessions == n && totalCalls(calls) == sessions)
	r.add("phase A", "API writes per FinchConnection (manager)", perConn(reqs, n, writeMethods))
	r.add("phase A", "API reads per FinchConnection (manager, uncached)", perConn(reqs, n, []string{"GET"}))
	r.add("phase A", "app status / reconciles", fmt.Sprintf("finchconnection %.0f, finchapp %.0f reconciles",
		reconciles(b.quietA, "finchconnection")-reconciles(s.metrics, "finchconnection"),
		reconciles(b.quietA, "finchapp")-reconciles(s.metrics, "finchapp")))
	if b.bare.total > 0 {
		server := []string{"kube-apiserver", "etcd"}
		r.add("phase A", "CPU operator run / bare run", fmt.Sprintf("API server+etcd %.2fx, all processes %.2fx (2 shared cores: wall time follows total CPU)",
			cpu.seconds(server...)/b.bare.cpu.seconds(server...), cpu.seconds()/b.bare.cpu.seconds()))
	}
	r.add("phase A", "CPU during phase", fmt.Sprintf("%s (wall %s; load %s -> %s)", cpu, secs(time.Since(s.at)), s.load, loadAvg()))
}

// memory is the memory per FinchConnection after phase A.
func (b *benchRun) memory(ctx context.Context) error {
	logf("memory after phase A (waiting up to %v for a GC cycle)", b.gcWait)
	after, err := memoryAfterGC(ctx, b.op, b.quietA, b.gcWait)
	if err != nil {
		return err
	}
	note := ""
	if !b.base.afterGC || !after.afterGC {
		note = " (no GC seen within the wait: upper bound)"
	}
	if b.pprof && !b.inProcess {
		if err := fetchTo(ctx, "http://"+b.addrs.pprof+"/debug/pprof/heap", b.runDir+"/manager-heap-phaseA.pprof", time.Minute); err != nil {
			b.rep.fail("heap profile: %v", err)
		}
	}
	r, base, n := b.rep, b.base, float64(b.n)
	r.add("memory", "baseline (0 connections)", fmt.Sprintf("RSS %s, heap in use %s", mib(float64(base.rss)), mib(base.heapInuse)))
	r.add("memory", fmt.Sprintf("after %d connections", b.n), fmt.Sprintf("RSS %s (peak %s), heap in use %s%s", mib(float64(after.rss)), mib(float64(after.hwm)), mib(after.heapInuse), note))
	if b.op.PID() != 0 {
		rssPer := float64(after.rss-base.rss) / n
		r.goal("memory", "RSS per FinchConnection", kib(rssPer), "<= 8 KiB (at 10k)", rssPer <= 8*1024)
	}
	heapPer := (after.heapInuse - base.heapInuse) / n
	r.goal("memory", "heap in use per FinchConnection", kib(heapPer), "<= 8 KiB (at 10k)", heapPer <= 8*1024)
	return nil
}

// storm connects a fraction of phase A's connections (embedded flow), then
// flips them all to reauth at once: Finch sends one signed account.updated
// webhook each to the manager's inbound server.
func (b *benchRun) storm(ctx context.Context) error {
	sel := spread(b.keys, int(math.Round(float64(b.n)*b.reauthFrac)))
	if len(sel) == 0 {
		return nil
	}
	quiet, err := b.connect(ctx, sel)
	if err != nil {
		return err
	}
	return b.flip(ctx, sel, quiet)
}

func (b *benchRun) connect(ctx context.Context, sel []types.NamespacedName) (metricSet, error) {
	k := len(sel)
	logf("storm: connecting %d connections (embedded flow)", k)
	s, err := b.mark(ctx, b.simA)
	if err != nil {
		return nil, err
	}
	if err := b.handOver(ctx, b.simA, b.workers, sel); err != nil {
		return nil, err
	}
	if err := b.tr.waitCount(ctx, "storm: Connected", sel, (*connState).connected, 5*time.Minute+time.Duration(k)*100*time.Millisecond); err != nil {
		return nil, err
	}
	last := b.tr.latest(sel, tConnected)
	q, err := waitQuiet(ctx, b.op, 2*time.Second, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	b.rep.add("connect 10%", fmt.Sprintf("%d codes handed over -> all Connected", k), secs(last.Sub(s.at)))
	b.rep.add("connect 10%", "Finch calls per connected connection", perConn(diff(b.simA.CallCounts(), s.calls), k, nil))
	b.rep.add("connect 10%", "API writes per connected connection (manager)", perConn(diff(apiRequests(q), apiRequests(s.metrics)), k, writeMethods))
	return q, nil
}

func (b *benchRun) flip(ctx context.Context, sel []types.NamespacedName, m1 metricSet) error {
	k, sim := len(sel), b.simA
	ids, err := b.connIDs(sel)
	if err != nil {
		return err
	}
	logf("storm: flipping %d connections to reauth at once", k)
	calls1, hooks0 := sim.CallCounts(), sim.WebhookDeliveries()
	t1, err := flipToReauth(sim, ids)
	if err != nil {
		return err
	}
	got, err := b.waitReauth(ctx, sel)
	if err != nil {
		return err
	}
	lastR := b.tr.latest(sel, tReauth)
	sim.WaitWebhooks(30 * time.Second)
	qr, err := waitQuiet(ctx, b.op, 2*time.Second, 2*time.Minute)
	if err != nil {
		return err
	}
	r, calls := b.rep, diff(sim.CallCounts(), calls1)
	reauth := calls[finchsim.EndpointReauthSession]
	delete(calls, finchsim.EndpointReauthSession)
	r.goal("webhook storm", "flipped connections that got a reauth session", fmt.Sprintf("%d of %d", got, k), "all", got == k)
	until := "none observed"
	if !lastR.IsZero() {
		until = secs(lastR.Sub(t1)) + " until the last one"
	}
	r.add("webhook storm", fmt.Sprintf("%d flipped at once -> reauth sessions", k), fmt.Sprintf("%s (webhooks delivered %d, given up by Finch %d, attempts %d)",
		until, sim.WebhookDeliveries()-hooks0, sim.WebhookFailures(), sim.WebhookAttempts()))
	// With none observed there is no per-connection figure (the 50k storm
	// once printed 1400.000 here: 1,400 calls over zero connections).
	perGot := fmt.Sprintf("n/a: none observed, %d reauth calls", reauth)
	if got > 0 {
		perGot = fmt.Sprintf("%.3f", float64(reauth)/float64(got))
	}
	r.goal("webhook storm", "reauth calls per flipped connection that got one", perGot, "exactly 1", got > 0 && reauth == got)
	r.goal("webhook storm", "other Finch calls during storm", perConn(calls, k, nil), "0", totalCalls(calls) == 0)
	r.add("webhook storm", "API writes per flipped connection (manager)", perConn(diff(apiRequests(qr), apiRequests(m1)), k, writeMethods))
	hooks := diff(qr.byLabel("finch_inbound_webhooks_total", "result"), m1.byLabel("finch_inbound_webhooks_total", "result"))
	r.add("webhook storm", "inbound webhook results", fmt.Sprint(mapInts(hooks)))
	return nil
}

// waitReauth waits until every flipped connection has a reauth session, or
// until every webhook delivery has finished (delivered or given up) and
// nothing has moved for 30 s: a lost webhook never arrives.
func (b *benchRun) waitReauth(ctx context.Context, sel []types.NamespacedName) (int, error) {
	got, lastN, lastMove := 0, -1, time.Now()
	err := poll(ctx, 100*time.Millisecond, 10*time.Minute, func() (bool, error) {
		if got = b.tr.count(sel, (*connState).reauth); got != lastN {
			lastN, lastMove = got, time.Now()
		}
		return got == len(sel) || b.simA.WaitWebhooks(0) && time.Since(lastMove) > 30*time.Second, nil
	})
	if errors.Is(err, errTimeout) {
		err = nil
	}
	return got, err
}

// restart stops the manager gracefully and starts it again with nothing due.
func (b *benchRun) restart(ctx context.Context) error {
	logf("restart: SIGTERM and start again")
	before, beforeE := b.simA.CallCounts(), b.simE.CallCounts()
	last, _ := scrape(ctx, b.op.MetricsURL())
	tStop := time.Now()
	if err := b.op.Stop(syscall.SIGTERM, 60*time.Second); err != nil {
		b.rep.fail("stop: %v", err)
	}
	stopTook := time.Since(tStop)
	if err := b.startManager(); err != nil {
		return err
	}
	baseRec := 0.0
	if b.inProcess { // process-global counters carry over
		baseRec = reconciles(last, "finchconnection")
	}
	resync, mr, err := waitResync(ctx, b.op, baseRec, b.n, 3*time.Second, 5*time.Minute)
	if err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // anything late would show up here
	calls := totalCalls(diff(b.simA.CallCounts(), before)) + totalCalls(diff(b.simE.CallCounts(), beforeE))
	r := b.rep
	r.add("restart", "graceful stop (SIGTERM -> exit)", fmt.Sprintf("%.0f ms", float64(stopTook.Microseconds())/1000))
	r.goal("restart", "Finch calls after restart", fmt.Sprint(calls), "0", calls == 0)
	r.add("restart", "time to resync (start -> queue drained, reconciles stable)", fmt.Sprintf("%s (%d objects)", secs(resync), b.n))
	if !b.inProcess {
		wr := apiRequests(mr)
		writes := 0.0
		for _, m := range writeMethods {
			writes += wr[m]
		}
		r.goal("restart", "API writes after restart", perConn(wr, 1, writeMethods), "0", writes == 0)
	}
	return nil
}

// economy creates connections on an app whose budget equals the simulator's
// rate limit and measures how much of the budget the session phase used.
func (b *benchRun) economy(ctx context.Context) error {
	n, req, win := b.econN, b.econRequests, b.econWindow
	logf("economy: %d FinchConnections, budget = simulator limit = %d per %v", n, req, win)
	t0 := time.Now()
	if err := createConns(ctx, b.c, nsEcon, "econ", n, b.workers, 0, nil); err != nil {
		return err
	}
	keys := keysFor(nsEcon, "econ", n)
	ideal := time.Duration(math.Ceil(float64(n)/float64(req))-1) * win
	if err := b.tr.waitCount(ctx, "economy AwaitingConnect", keys, (*connState).awaiting, 10*time.Minute+3*ideal); err != nil {
		return err
	}
	last := b.tr.latest(keys, tAwaiting)
	if _, err := waitQuiet(ctx, b.op, 2*time.Second, 2*time.Minute); err != nil {
		return err
	}
	arr := b.simE.arrivalsBetween(finchsim.EndpointCreateSession, t0, time.Now())
	saveArrivals(b.runDir+"/econ-session-arrivals.txt", arr)
	used, avail, windows := budgetUse(arr, req, win)
	n429 := b.simE.Responses(finchsim.EndpointCreateSession, 429)
	r := b.rep
	r.add("economy", "budget (FinchApp.spec.rateLimit = simulator limit)", fmt.Sprintf("%d requests / %v per endpoint; %d connections", req, win, n))
	r.add("economy", "time until all AwaitingConnect", fmt.Sprintf("%s (ideal at full budget %s)", secs(last.Sub(t0)), secs(ideal)))
	if windows == 0 {
		r.add("economy", "budget used / available", fmt.Sprintf("n/a: %d calls fit in one window", len(arr)))
	} else {
		u := float64(used) / float64(avail)
		r.goal("economy", "budget used / available (full windows)", fmt.Sprintf("%.3f (%d / %d over %d windows)", u, used, avail, windows), ">= 0.95", u >= 0.95)
	}
	r.add("economy", "session calls per window (from the first call)", fmt.Sprint(callsPerWindow(arr, win)))
	r.goal("economy", "session calls per connection", fmt.Sprintf("%.3f", float64(len(arr))/float64(n)), "1", len(arr) == n)
	r.goal("economy", "429 responses", fmt.Sprint(n429), "0", n429 == 0)
	return nil
}

func callsPerWindow(arr []time.Time, win time.Duration) []int {
	var out []int
	for _, t := range arr {
		k := int(t.Sub(arr[0]) / win)
		for len(out) <= k {
			out = append(out, 0)
		}
		out[k]++
	}
	return out
}

// budgetUse counts calls in the complete windows of the session phase: windows
// [t0+kW, t0+(k+1)W) that end before the last call (the last, partial window
// is the tail of the work, not a budget the operator left unused). Budget
// available is windows x requests.
func budgetUse(arr []time.Time, requests int, win time.Duration) (used, avail, windows int) {
	if len(arr) == 0 {
		return 0, 0, 0
	}
	sort.Slice(arr, func(i, j int) bool { return arr[i].Before(arr[j]) })
	t0, tn := arr[0], arr[len(arr)-1]
	windows = int(tn.Sub(t0) / win)
	end := t0.Add(time.Duration(windows) * win)
	for _, t := range arr {
		if t.Before(end) {
			used++
		}
	}
	return used, windows * requests, windows
}

// saveArrivals writes the call times as seconds from the first one.
func saveArrivals(path string, arr []time.Time) {
	var b strings.Builder
	for _, t := range arr {
		fmt.Fprintf(&b, "%.3f\n", t.Sub(arr[0]).Seconds())
	}
	_ = os.WriteFile(path, []byte(b.String()), 0o644)
}

// profileCPU fetches a CPU profile of the manager process (-pprof) in the
// background; the returned func waits for it.
func (b *benchRun) profileCPU(ctx context.Context) (wait func()) {
	if !b.pprof || b.inProcess {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.addrs.pprof, b.pprofSeconds)
		if err := fetchTo(ctx, url, b.runDir+"/manager-cpu-phaseA.pprof", time.Duration(b.pprofSeconds+30)*time.Second); err != nil {
			b.rep.fail("cpu profile: %v", err)
		}
	}()
	return func() { <-done }
}

// fetchTo saves the body of a GET (a pprof profile) to a file.
func fetchTo(ctx context.Context, url, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func writeHeapProfile(path string) {
	runtime.GC()
	if f, err := os.Create(path); err == nil {
		_ = pprof.WriteHeapProfile(f)
		f.Close()
	}
}
