package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finchsim"
)

type benchConfig struct {
	n            int
	workers      int // the manager's --max-concurrent-reconciles, also the bench's create/patch concurrency
	managerBin   string
	managerArgs  []string
	inProcess    bool
	runDir       string
	gcWait       time.Duration
	bareQPS      float64 // <= 0: unthrottled
	bareEvents   bool    // also measure the bare client plus one Event per object
	econN        int
	econRequests int
	econWindow   time.Duration
	stormFrac    float64
	skip         map[string]bool
	cpuProfile   string
	memProfile   string
	pprof        bool // profile the manager process through --pprof-bind-address
	pprofSeconds int
	timeout      time.Duration
}

const (
	nsBare = "bench-bare"
	nsMain = "bench"
	nsEcon = "bench-econ"
	appA   = "default"
)

// runBench is `make bench`: scale and Finch economy.
func runBench(ctx context.Context, cfg benchConfig) *report {
	rep := newReport(fmt.Sprintf("finch-operator bench (N=%d)", cfg.n))
	rep.Meta["date"] = time.Now().UTC().Format(time.RFC3339)
	rep.Meta["machine"] = machine()
	rep.Meta["load at start"] = loadAvg()
	rep.Meta["manager"] = managerDesc(cfg.inProcess, cfg.managerBin, cfg.managerArgs)
	if cfg.inProcess {
		rep.Meta["note"] = "in-process mode: memory, CPU and the time ratio include the bench and simulator; use it for profiles only"
	}
	if len(managerEnv) > 0 {
		rep.Meta["manager env"] = strings.Join(managerEnv, " ")
	}
	rep.Meta["run dir"] = cfg.runDir
	if err := bench(ctx, cfg, rep); err != nil {
		rep.fail("%v", err)
	}
	rep.Meta["load at end"] = loadAvg()
	return rep
}

func machine() string {
	host, _ := os.Hostname()
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1] + " kB RAM"
	}
	return fmt.Sprintf("%s, %d CPUs (%s), %s, %s %s/%s", host, runtime.NumCPU(), cpu, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func managerDesc(inProcess bool, bin string, args []string) string {
	if inProcess {
		return "in-process (profiling mode) " + strings.Join(args, " ")
	}
	if len(args) == 0 {
		return bin + " (production defaults)"
	}
	return bin + " " + strings.Join(args, " ")
}

func bench(ctx context.Context, cfg benchConfig, rep *report) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}

	logf("starting envtest")
	w, err := startWorld(cfg.runDir)
	if err != nil {
		return err
	}
	defer w.stop()
	// Watches end before the API server stops (deferred calls run last-in first-out).
	ctx, cancelWatches := context.WithCancel(ctx)
	defer cancelWatches()

	// The bench watches every FinchConnection from here on, so the bare client
	// and the operator are observed (and cost the API server) alike.
	tr, err := startTracker(ctx, w)
	if err != nil {
		return err
	}

	// --- Bare client: the floor for creating and status-patching N objects.
	var bare bareResult
	if !cfg.skip["bare"] {
		logf("bare client: create + status-patch %d FinchConnections, concurrency %d", cfg.n, cfg.workers)
		bare, err = runBare(ctx, w, cfg)
		if err != nil {
			return fmt.Errorf("bare client: %w", err)
		}
		rep.add("bare client", "CPU during the measured round", bare.cpu.String()+" (load "+bare.load+")")
		if ev := bare.withEvents; ev != nil {
			rep.add("bare client", "same + 1 Event per object (-bare-events)", fmt.Sprintf("%s; CPU %s", secs(ev.total), ev.cpu))
		}
		q := "unthrottled"
		if cfg.bareQPS > 0 {
			q = fmt.Sprintf("QPS %.0f", cfg.bareQPS)
		}
		rep.add("bare client", "create + status patch, all N", fmt.Sprintf("%s (creates done at %s; %d workers, %s)", secs(bare.total), secs(bare.created), cfg.workers, q))
	}

	// --- Simulators, apps, manager.
	simA, err := startSim()
	if err != nil {
		return err
	}
	defer simA.close()
	simE, err := startSim()
	if err != nil {
		return err
	}
	defer simE.close()
	addrs, err := newAddrs()
	if err != nil {
		return err
	}
	hook := webhookSecret()
	simA.AddApp(finchsim.AppConfig{ClientID: "bench-a", ClientSecret: "bench-a-secret",
		WebhookURL: "http://" + addrs.inbound + "/webhooks/" + nsMain + "/" + appA, WebhookSecret: hook})
	econWindow := cfg.econWindow
	simE.AddApp(finchsim.AppConfig{ClientID: "bench-e", ClientSecret: "bench-e-secret",
		RateLimit: finchsim.RateLimit{Requests: cfg.econRequests, Window: econWindow}})
	// The throughput app's budget is set out of the way (the simulator has no
	// limit for it): phase A measures the operator and the API server, the
	// economy phase measures the budget.
	if err := w.createApp(ctx, appSpec{ns: nsMain, name: appA, clientID: "bench-a", clientSecret: "bench-a-secret",
		apiURL: simA.URL, requests: 100000, window: time.Second, webhookSecretB64: hook}); err != nil {
		return err
	}
	if !cfg.skip["econ"] {
		if err := w.createApp(ctx, appSpec{ns: nsEcon, name: appA, clientID: "bench-e", clientSecret: "bench-e-secret",
			apiURL: simE.URL, requests: int32(cfg.econRequests), window: econWindow}); err != nil {
			return err
		}
	}

	start := func(name string) (operator, error) {
		if cfg.inProcess {
			return startInProcManager(w.cfg, name, addrs, cfg.managerArgs)
		}
		args := cfg.managerArgs
		if cfg.pprof {
			args = append([]string{"--pprof-bind-address=" + addrs.pprof}, args...)
		}
		return startProcManager(cfg.managerBin, w.kubeconfig, cfg.runDir, name, addrs, args)
	}
	logf("starting manager")
	op, err := start("manager")
	if err != nil {
		return err
	}
	defer func() { _ = op.Stop(syscall.SIGTERM, 30*time.Second) }()
	if _, err := waitMetrics(ctx, op, 60*time.Second); err != nil {
		return err
	}
	// Both FinchApps Ready before anything is measured.
	if err := waitAppsReady(ctx, w, 60*time.Second, nsMain, nsEcon); err != nil {
		return err
	}
	q0, err := waitQuiet(ctx, op, 2*time.Second, 60*time.Second)
	if err != nil {
		return err
	}
	var base memSample
	if !cfg.skip["memory"] {
		logf("baseline memory (waiting up to %v for a GC cycle)", cfg.gcWait)
		base, err = memoryAfterGC(ctx, op, q0.metrics, cfg.gcWait)
		if err != nil {
			return err
		}
	}

	// --- Phase A: N FinchConnections to AwaitingConnect.
	logf("phase A: creating %d FinchConnections", cfg.n)
	m0, err := scrape(ctx, op.MetricsURL())
	if err != nil {
		return err
	}
	calls0 := simA.CallCounts()
	cpu0 := takeCPU()
	load0 := loadAvg()
	t0 := time.Now()
	var profWG sync.WaitGroup
	if cfg.pprof && !cfg.inProcess {
		profWG.Add(1)
		go func() {
			defer profWG.Done()
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addrs.pprof, cfg.pprofSeconds)
			if err := fetchTo(ctx, url, cfg.runDir+"/manager-cpu-phaseA.pprof", time.Duration(cfg.pprofSeconds+30)*time.Second); err != nil {
				rep.fail("cpu profile: %v", err)
			}
		}()
	}
	var createdAt time.Duration
	createErr := make(chan error, 1)
	go func() {
		err := createConns(ctx, w.c, nsMain, "conn", 0, cfg.n, cfg.workers, 0, nil)
		createdAt = time.Since(t0)
		createErr <- err
	}()
	keys := keysFor(nsMain, "conn", 0, cfg.n)
	if err := <-createErr; err != nil {
		return err
	}
	waitA := 10*time.Minute + time.Duration(cfg.n)*100*time.Millisecond
	if err := tr.waitCount(ctx, "phase A AwaitingConnect", "", keys, cfg.n, (*connState).awaiting, waitA); err != nil {
		return err
	}
	last, _ := tr.lastTime(keys, func(s *connState) time.Time { return s.awaitingAt })
	opTime := last.Sub(t0)
	qa, err := waitQuiet(ctx, op, 2*time.Second, 2*time.Minute)
	if err != nil {
		return err
	}
	profWG.Wait()
	cpuA := takeCPU().since(cpu0)
	callsA := diffCounts(simA.CallCounts(), calls0)
	writesA := diffFloat(apiRequests(qa.metrics), apiRequests(m0))
	rep.add("phase A", "create N FinchConnections (bench client)", secs(createdAt))
	rep.add("phase A", "time until all AwaitingConnect", fmt.Sprintf("%s (%.0f/s)", secs(opTime), float64(cfg.n)/opTime.Seconds()))
	if bare.total > 0 {
		ratio := opTime.Seconds() / bare.total.Seconds()
		rep.goal("phase A", "operator / bare client", fmt.Sprintf("%.2fx", ratio), "<= 1.25x", ratio <= 1.25)
	}
	other := totalCalls(callsA) - callsA[finchsim.EndpointCreateSession]
	rep.goal("phase A", "Finch calls per FinchConnection", perConn(callsA, cfg.n, nil),
		"1 session call, nothing else", callsA[finchsim.EndpointCreateSession] == cfg.n && other == 0)
	rep.add("phase A", "API writes per FinchConnection (manager)", perConn(writesA, cfg.n, writeMethods))
	rep.add("phase A", "API reads per FinchConnection (manager, uncached)", perConn(writesA, cfg.n, []string{"GET"}))
	rep.add("phase A", "app status / reconciles", fmt.Sprintf("finchconnection %.0f, finchapp %.0f reconciles",
		qa.metrics.sum("controller_runtime_reconcile_total", "controller", "finchconnection")-m0.sum("controller_runtime_reconcile_total", "controller", "finchconnection"),
		qa.metrics.sum("controller_runtime_reconcile_total", "controller", "finchapp")-m0.sum("controller_runtime_reconcile_total", "controller", "finchapp")))
	if bare.total > 0 {
		server := func(c cpuSnapshot) float64 { return (c["kube-apiserver"] + c["etcd"]).Seconds() }
		all := func(c cpuSnapshot) float64 {
			t := 0.0
			for _, v := range c {
				t += v.Seconds()
			}
			return t
		}
		rep.add("phase A", "CPU operator run / bare run", fmt.Sprintf("API server+etcd %.2fx, all processes %.2fx (2 shared cores: wall time follows total CPU)",
			server(cpuA)/server(bare.cpu), all(cpuA)/all(bare.cpu)))
	}
	rep.add("phase A", "CPU during phase", fmt.Sprintf("%s (wall %s; load %s -> %s)", cpuA, secs(time.Since(t0)), load0, loadAvg()))

	// --- Memory per FinchConnection.
	if !cfg.skip["memory"] {
		logf("memory after phase A (waiting up to %v for a GC cycle)", cfg.gcWait)
		after, err := memoryAfterGC(ctx, op, qa.metrics, cfg.gcWait)
		if err != nil {
			return err
		}
		note := ""
		if !base.afterGC || !after.afterGC {
			note = " (no GC seen within the wait: upper bound)"
		}
		if cfg.pprof && !cfg.inProcess {
			if err := fetchTo(ctx, "http://"+addrs.pprof+"/debug/pprof/heap", cfg.runDir+"/manager-heap-phaseA.pprof", time.Minute); err != nil {
				rep.fail("heap profile: %v", err)
			}
		}
		heapPer := (after.heapInuse - base.heapInuse) / float64(cfg.n)
		rep.add("memory", "baseline (0 connections)", fmt.Sprintf("RSS %s, heap in use %s", mib(float64(base.rss)), mib(base.heapInuse)))
		rep.add("memory", fmt.Sprintf("after %d connections", cfg.n), fmt.Sprintf("RSS %s (peak %s), heap in use %s%s", mib(float64(after.rss)), mib(float64(after.hwm)), mib(after.heapInuse), note))
		if op.PID() != 0 {
			rssPer := float64(after.rss-base.rss) / float64(cfg.n)
			rep.goal("memory", "RSS per FinchConnection", kib(rssPer), "<= 8 KiB (at 10k)", rssPer <= 8*1024)
		}
		rep.goal("memory", "heap in use per FinchConnection", kib(heapPer), "<= 8 KiB (at 10k)", heapPer <= 8*1024)
	}

	// --- Webhook storm: 10% connected, then flipped to reauth at once.
	total := cfg.n
	if !cfg.skip["storm"] {
		if err := runStorm(ctx, cfg, w, tr, simA, op, keys, rep); err != nil {
			return fmt.Errorf("webhook storm: %w", err)
		}
	}

	// --- Restart with nothing due.
	if !cfg.skip["restart"] {
		logf("restart: SIGTERM and start again")
		before := simA.CallCounts()
		beforeE := simE.CallCounts()
		last, _ := scrape(ctx, op.MetricsURL())
		tStop := time.Now()
		if err := op.Stop(syscall.SIGTERM, 60*time.Second); err != nil {
			rep.fail("stop: %v", err)
		}
		stopTook := time.Since(tStop)
		op, err = start("manager")
		if err != nil {
			return err
		}
		baseRec := 0.0
		if cfg.inProcess { // process-global counters carry over
			baseRec = last.sum("controller_runtime_reconcile_total", "controller", "finchconnection")
		}
		resync, mr, err := waitResync(ctx, op, baseRec, total, 3*time.Second, 5*time.Minute)
		if err != nil {
			return err
		}
		time.Sleep(3 * time.Second) // anything late would show up here
		callsR := totalCalls(diffCounts(simA.CallCounts(), before)) + totalCalls(diffCounts(simE.CallCounts(), beforeE))
		rep.add("restart", "graceful stop (SIGTERM -> exit)", fmt.Sprintf("%.0f ms", float64(stopTook.Microseconds())/1000))
		rep.goal("restart", "Finch calls after restart", fmt.Sprint(callsR), "0", callsR == 0)
		rep.add("restart", "time to resync (start -> queue drained, reconciles stable)", fmt.Sprintf("%s (%d objects)", secs(resync), total))
		if !cfg.inProcess {
			wr := apiRequests(mr)
			writes := 0.0
			for _, m := range writeMethods {
				writes += wr[m]
			}
			rep.goal("restart", "API writes after restart", perConn(wr, 1, writeMethods), "0", writes == 0)
		}
	}

	// --- Economy: the budget equals the simulator's limit.
	if !cfg.skip["econ"] {
		if err := runEcon(ctx, cfg, w, tr, simE, op, rep); err != nil {
			return fmt.Errorf("economy: %w", err)
		}
	}

	if cfg.memProfile != "" && cfg.inProcess {
		runtime.GC()
		f, err := os.Create(cfg.memProfile)
		if err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	return nil
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

// waitAppsReady waits for the FinchApps in the namespaces to report Ready=True.
func waitAppsReady(ctx context.Context, w *world, timeout time.Duration, namespaces ...string) error {
	deadline := time.Now().Add(timeout)
	for _, ns := range namespaces {
		for {
			app := &finchv1.FinchApp{}
			err := w.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: appA}, app)
			if err == nil && conditionTrue(app.Status.Conditions, finchv1.ConditionReady) {
				break
			}
			if err != nil && client.IgnoreNotFound(err) == nil {
				break // not created in this run
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("FinchApp %s/%s not Ready after %v", ns, appA, timeout)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func conditionTrue(conds []metav1.Condition, typ string) bool {
	for _, c := range conds {
		if c.Type == typ {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// waitResync polls a freshly started operator until it has reconciled every
// object once (reconcile total >= objects above base), its queue is empty and
// the total has not moved for `stable`. It returns the time from process
// start to the beginning of that stable period.
func waitResync(ctx context.Context, op operator, base float64, objects int, stable, timeout time.Duration) (time.Duration, metricSet, error) {
	deadline := time.Now().Add(timeout)
	var lastTotal float64 = -1
	var since time.Time
	for time.Now().Before(deadline) {
		m, err := scrape(ctx, op.MetricsURL())
		if err == nil {
			tot := m.sum("controller_runtime_reconcile_total", "controller", "finchconnection") - base
			depth := m.sum("workqueue_depth", "name", "finchconnection") + m.sum("controller_runtime_active_workers", "controller", "finchconnection")
			if tot >= float64(objects) && depth == 0 {
				if tot != lastTotal {
					lastTotal, since = tot, time.Now()
				} else if time.Since(since) >= stable {
					return since.Sub(op.Started()), m, nil
				}
			} else {
				lastTotal = -1
			}
		}
		select {
		case <-op.Done():
			return 0, nil, fmt.Errorf("%s exited", op.Name())
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return 0, nil, fmt.Errorf("no resync within %v", timeout)
}

// bareResult is the floor: the same objects created and status-patched by a
// plain client at the same concurrency, with no operator running.
type bareResult struct {
	created, total time.Duration
	cpu            cpuSnapshot
	load           string
	withEvents     *bareResult // the same plus one Event per object (-bare-events)
}

// sessionEvent is an Event like the operator's SessionCreated.
func sessionEvent(conn *finchv1.FinchConnection) *eventsv1.Event {
	now := time.Now()
	return &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", conn.Name, now.UnixNano()), Namespace: conn.Namespace},
		EventTime:  metav1.NewMicroTime(now), ReportingController: "finch-operator", ReportingInstance: "finch-operator-bench",
		Action: "CreateSession", Reason: "SessionCreated", Type: corev1.EventTypeNormal,
		Regarding: corev1.ObjectReference{APIVersion: finchv1.GroupVersion.String(), Kind: "FinchConnection",
			Namespace: conn.Namespace, Name: conn.Name, UID: conn.UID, ResourceVersion: conn.ResourceVersion},
		Note: fmt.Sprintf("created Connect session %s (expires %s): send the employer status.session.connectURL",
			conn.Status.Session.ID, conn.Status.Session.ExpiresAt.UTC().Format(time.RFC3339)),
	}
}

func runBare(ctx context.Context, w *world, cfg benchConfig) (bareResult, error) {
	if err := w.namespace(ctx, nsBare); err != nil {
		return bareResult{}, err
	}
	c := w.c
	if cfg.bareQPS > 0 {
		var err error
		if c, err = w.clientWithQPS(float32(cfg.bareQPS), int(2*cfg.bareQPS)); err != nil {
			return bareResult{}, err
		}
	}
	// Warm the API server up (CRD handlers, watch cache, connections) with a
	// tenth of the objects, so the measured run is not the first one.
	warm := max(50, cfg.n/10)
	if _, err := bareRound(ctx, w, c, cfg, "warm", warm, false); err != nil {
		return bareResult{}, err
	}
	res, err := bareRound(ctx, w, c, cfg, "bare", cfg.n, false)
	if err != nil || !cfg.bareEvents {
		return res, err
	}
	// The same again with one Event per object, like the operator's SessionCreated.
	ev, err := bareRound(ctx, w, c, cfg, "bare-ev", cfg.n, true)
	res.withEvents = &ev
	return res, err
}

func bareRound(ctx context.Context, w *world, c client.Client, cfg benchConfig, prefix string, n int, withEvent bool) (bareResult, error) {
	ch := make(chan *finchv1.FinchConnection, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var patchErr error
	for range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for conn := range ch {
				patch := client.MergeFrom(conn.DeepCopy())
				conn.Status = awaitingStatus(conn)
				err := c.Status().Patch(ctx, conn, patch)
				if err == nil && withEvent {
					err = c.Create(ctx, sessionEvent(conn))
				}
				if err != nil {
					mu.Lock()
					patchErr = err
					mu.Unlock()
				}
			}
		}()
	}
	cpu0 := takeCPU()
	t0 := time.Now()
	err := createConns(ctx, c, nsBare, prefix, 0, n, cfg.workers, 0, func(conn *finchv1.FinchConnection) { ch <- conn })
	created := time.Since(t0)
	close(ch)
	wg.Wait()
	total := time.Since(t0)
	cpu := takeCPU().since(cpu0)
	if err != nil {
		return bareResult{}, err
	}
	if patchErr != nil {
		return bareResult{}, patchErr
	}
	// Remove them so the operator never sees them.
	if err := w.c.DeleteAllOf(ctx, &finchv1.FinchConnection{}, client.InNamespace(nsBare)); err != nil {
		return bareResult{}, err
	}
	for i := 0; ; i++ {
		list := &finchv1.FinchConnectionList{}
		if err := w.c.List(ctx, list, client.InNamespace(nsBare), client.Limit(1)); err != nil {
			return bareResult{}, err
		}
		if len(list.Items) == 0 {
			break
		}
		if i > 600 {
			return bareResult{}, errors.New("bare objects not deleted after 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return bareResult{created: created, total: total, cpu: cpu, load: loadAvg()}, nil
}

// awaitingStatus is what the operator writes on a new connection's first pass
// (same fields and similar message lengths).
func awaitingStatus(conn *finchv1.FinchConnection) finchv1.FinchConnectionStatus {
	now := metav1.Now()
	exp := metav1.NewTime(now.Add(14 * 24 * time.Hour))
	id := fmt.Sprintf("%08x-1111-4222-8333-%012x", len(conn.Name), time.Now().UnixNano()&0xffffffffffff)
	gen := conn.Generation
	cond := func(typ string, st metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, ObservedGeneration: gen, LastTransitionTime: now, Reason: reason, Message: msg}
	}
	return finchv1.FinchConnectionStatus{
		ObservedGeneration: gen,
		Phase:              finchv1.PhaseAwaitingConnect,
		Session: &finchv1.Session{ID: id, ConnectURL: "http://127.0.0.1:40000/authorize?session=" + id,
			Kind: finchv1.SessionConnect, IssuedAt: now, ExpiresAt: exp, RequestHash: "0123456789abcdef"},
		FirstSessionTime: &now,
		Conditions: []metav1.Condition{
			cond(finchv1.ConditionReady, metav1.ConditionTrue, "AwaitingEmployer", fmt.Sprintf("Connect session %s is waiting for the employer until %s: send them status.session.connectURL", id, exp.UTC().Format(time.RFC3339))),
			cond(finchv1.ConditionStalled, metav1.ConditionFalse, "AwaitingEmployer", "not stalled"),
			cond(finchv1.ConditionReconciling, metav1.ConditionFalse, "Succeeded", "the operator has done all it can for now"),
			cond(finchv1.ConditionConnected, metav1.ConditionFalse, "AwaitingEmployer", "not connected yet"),
			cond(finchv1.ConditionReauthRequired, metav1.ConditionFalse, "NotRequired", "no reauthentication needed"),
		},
	}
}

// runStorm connects a fraction of phase A's connections (embedded flow: the
// employer completes the session, a code Secret hands the code over), then
// flips them all to reauth at once: Finch sends one signed account.updated
// webhook each to the manager's inbound server.
func runStorm(ctx context.Context, cfg benchConfig, w *world, tr *tracker, sim *simServer, op operator, keys []types.NamespacedName, rep *report) error {
	k := int(math.Round(float64(cfg.n) * cfg.stormFrac))
	if k < 1 {
		return nil
	}
	sel := make([]types.NamespacedName, 0, k)
	step := len(keys) / k
	for i := 0; i < k; i++ {
		sel = append(sel, keys[i*step])
	}
	logf("storm: connecting %d connections (embedded flow)", k)
	m0, err := scrape(ctx, op.MetricsURL())
	if err != nil {
		return err
	}
	calls0 := sim.CallCounts()
	t0 := time.Now()
	if err := parallel(ctx, cfg.workers, sel, func(key types.NamespacedName) error {
		s, ok := tr.get(key)
		if !ok || s.sessID == "" {
			return fmt.Errorf("%s has no session", key.Name)
		}
		code, err := sim.CompleteSession(s.sessID, finchsim.Completion{})
		if err != nil {
			return fmt.Errorf("complete %s: %w", key.Name, err)
		}
		return w.c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{GenerateName: key.Name + "-code-", Namespace: key.Namespace,
				Labels: map[string]string{finchv1.ConnectionLabel: key.Name}},
			Type:       finchv1.CodeSecretType,
			StringData: map[string]string{finchv1.CodeKey: code},
		})
	}); err != nil {
		return err
	}
	if err := tr.waitCount(ctx, "storm: Connected", "", sel, k, (*connState).connected, 5*time.Minute+time.Duration(k)*100*time.Millisecond); err != nil {
		return err
	}
	last, _ := tr.lastTime(sel, func(s *connState) time.Time { return s.connectedAt })
	qc, err := waitQuiet(ctx, op, 2*time.Second, 2*time.Minute)
	if err != nil {
		return err
	}
	callsC := diffCounts(sim.CallCounts(), calls0)
	wc := diffFloat(apiRequests(qc.metrics), apiRequests(m0))
	rep.add("connect 10%", fmt.Sprintf("%d codes handed over -> all Connected", k), secs(last.Sub(t0)))
	rep.add("connect 10%", "Finch calls per connected connection", perConn(callsC, k, nil))
	rep.add("connect 10%", "API writes per connected connection (manager)", perConn(wc, k, writeMethods))

	// Flip them all at once.
	connIDs := make([]string, 0, k)
	for _, key := range sel {
		s, _ := tr.get(key)
		if s.connID == "" {
			return fmt.Errorf("%s has no connection ID", key.Name)
		}
		connIDs = append(connIDs, s.connID)
	}
	logf("storm: flipping %d connections to reauth at once", k)
	m1 := qc.metrics
	calls1 := sim.CallCounts()
	hooks0 := sim.WebhookDeliveries()
	var gate sync.WaitGroup
	gate.Add(1)
	var flipWG sync.WaitGroup
	var flipErr error
	var mu sync.Mutex
	for _, id := range connIDs {
		flipWG.Add(1)
		go func() {
			defer flipWG.Done()
			gate.Wait()
			if err := sim.SetConnectionStatus(id, "reauth"); err != nil {
				mu.Lock()
				flipErr = err
				mu.Unlock()
			}
		}()
	}
	t1 := time.Now()
	gate.Done()
	flipWG.Wait()
	if flipErr != nil {
		return flipErr
	}
	// Wait for all, or until every webhook delivery has finished (delivered or
	// given up) and nothing has moved for 30 s: a lost webhook never arrives.
	got, lastN, lastMove := 0, -1, time.Now()
	for deadline := time.Now().Add(10 * time.Minute); ; {
		got = tr.count("", sel, (*connState).reauth)
		if got != lastN {
			lastN, lastMove = got, time.Now()
		}
		if got == k || time.Now().After(deadline) || (sim.WaitWebhooks(0) && time.Since(lastMove) > 30*time.Second) {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	lastR, _ := tr.lastTime(sel, func(s *connState) time.Time { return s.reauthAt })
	if got < k {
		lastR = time.Time{}
		for _, key := range sel {
			if s, ok := tr.get(key); ok && s.reauthAt.After(lastR) {
				lastR = s.reauthAt
			}
		}
	}
	sim.WaitWebhooks(30 * time.Second)
	qr, err := waitQuiet(ctx, op, 2*time.Second, 2*time.Minute)
	if err != nil {
		return err
	}
	rep.goal("webhook storm", "flipped connections that got a reauth session", fmt.Sprintf("%d of %d", got, k), "all", got == k)
	callsR := diffCounts(sim.CallCounts(), calls1)
	wr := diffFloat(apiRequests(qr.metrics), apiRequests(m1))
	reauth := callsR[finchsim.EndpointReauthSession]
	rep.add("webhook storm", fmt.Sprintf("%d flipped at once -> reauth sessions", k), fmt.Sprintf("%s until the last one (webhooks delivered %d, given up by Finch %d, attempts %d)",
		secs(lastR.Sub(t1)), sim.WebhookDeliveries()-hooks0, sim.WebhookFailures(), sim.WebhookAttempts()))
	rep.goal("webhook storm", "reauth calls per flipped connection that got one", fmt.Sprintf("%.3f", float64(reauth)/float64(max(got, 1))), "exactly 1", reauth == got)
	rep.goal("webhook storm", "other Finch calls during storm", perConn(withoutKey(callsR, finchsim.EndpointReauthSession), k, nil), "0", totalCalls(callsR)-reauth == 0)
	rep.add("webhook storm", "API writes per flipped connection (manager)", perConn(wr, k, writeMethods))
	rep.add("webhook storm", "inbound webhook results", fmt.Sprint(mapInts(diffFloat(qr.metrics.byLabel("finch_inbound_webhooks_total", "result"), m1.byLabel("finch_inbound_webhooks_total", "result")))))
	return nil
}

func withoutKey(m map[string]int, k string) map[string]int {
	out := map[string]int{}
	for kk, v := range m {
		if kk != k {
			out[kk] = v
		}
	}
	return out
}

func mapInts(m map[string]float64) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}

// parallel runs f over items with n goroutines and returns the first error.
func parallel[T any](ctx context.Context, n int, items []T, f func(T) error) error {
	ch := make(chan T)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				if err := f(it); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, it := range items {
		select {
		case ch <- it:
		case <-ctx.Done():
		}
	}
	close(ch)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// runEcon creates connections on an app whose budget equals the simulator's
// rate limit and measures how much of the budget the session phase used.
func runEcon(ctx context.Context, cfg benchConfig, w *world, tr *tracker, sim *simServer, op operator, rep *report) error {
	n := cfg.econN
	r, win := cfg.econRequests, cfg.econWindow
	logf("economy: %d FinchConnections, budget = simulator limit = %d per %v", n, r, win)
	t0 := time.Now()
	if err := createConns(ctx, w.c, nsEcon, "econ", 0, n, cfg.workers, 0, nil); err != nil {
		return err
	}
	keys := keysFor(nsEcon, "econ", 0, n)
	ideal := time.Duration(math.Ceil(float64(n)/float64(r))-1) * win
	if err := tr.waitCount(ctx, "economy AwaitingConnect", "", keys, n, (*connState).awaiting, 10*time.Minute+3*ideal); err != nil {
		return err
	}
	last, _ := tr.lastTime(keys, func(s *connState) time.Time { return s.awaitingAt })
	if _, err := waitQuiet(ctx, op, 2*time.Second, 2*time.Minute); err != nil {
		return err
	}
	arr := sim.arrivalsBetween(finchsim.EndpointCreateSession, t0, time.Now())
	calls := len(arr)
	used, avail, windows := budgetUse(arr, r, win)
	perWindow := callsPerWindow(arr, win)
	saveArrivals(cfg.runDir+"/econ-session-arrivals.txt", arr)
	n429 := sim.Responses(finchsim.EndpointCreateSession, 429)
	rep.add("economy", "budget (FinchApp.spec.rateLimit = simulator limit)", fmt.Sprintf("%d requests / %v per endpoint; %d connections", r, win, n))
	rep.add("economy", "time until all AwaitingConnect", fmt.Sprintf("%s (ideal at full budget %s)", secs(last.Sub(t0)), secs(ideal)))
	if windows == 0 {
		rep.add("economy", "budget used / available", fmt.Sprintf("n/a: %d calls fit in one window", calls))
	} else {
		u := float64(used) / float64(avail)
		rep.goal("economy", "budget used / available (full windows)", fmt.Sprintf("%.3f (%d / %d over %d windows)", u, used, avail, windows), ">= 0.95", u >= 0.95)
	}
	rep.add("economy", "session calls per window (from the first call)", fmt.Sprint(perWindow))
	rep.goal("economy", "session calls per connection", fmt.Sprintf("%.3f", float64(calls)/float64(n)), "1", calls == n)
	rep.goal("economy", "429 responses", fmt.Sprint(n429), "0", n429 == 0)
	return nil
}

func callsPerWindow(arr []time.Time, win time.Duration) []int {
	if len(arr) == 0 {
		return nil
	}
	out := []int{}
	for _, t := range arr {
		k := int(t.Sub(arr[0]) / win)
		for len(out) <= k {
			out = append(out, 0)
		}
		out[k]++
	}
	return out
}

// saveArrivals writes the call times as seconds from the first one.
func saveArrivals(path string, arr []time.Time) {
	var b strings.Builder
	for _, t := range arr {
		fmt.Fprintf(&b, "%.3f\n", t.Sub(arr[0]).Seconds())
	}
	_ = os.WriteFile(path, []byte(b.String()), 0o644)
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
