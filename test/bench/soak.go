package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finchsim"
)

type soakConfig struct {
	n           int
	workers     int
	managerBin  string
	managerArgs []string
	runDir      string
	seed        uint64
	timeout     time.Duration
	requests    int
	window      time.Duration
	reauthFrac  float64
}

const injected429 = "429 with Retry-After 2s (every endpoint)"

const (
	nsSoak   = "soak"
	nsLeases = "finch-system"
)

// disturbance is a fault window or a manager crash; `end` is when it cleared
// (fault removed, crashed manager started again, new leader elected).
type disturbance struct {
	what       string
	start, end time.Time
}

type soakState struct {
	mu   sync.Mutex
	dist []disturbance
	t0   time.Time
}

func (s *soakState) record(what string, start, end time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dist = append(s.dist, disturbance{what, start, end})
	logf("disturbance: %s [+%.1fs, +%.1fs]", what, start.Sub(s.t0).Seconds(), end.Sub(s.t0).Seconds())
}

func (s *soakState) all() []disturbance {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]disturbance(nil), s.dist...)
	sort.Slice(out, func(i, j int) bool { return out[i].end.Before(out[j].end) })
	return out
}

// replica is one manager replica whose process may be killed and restarted.
type replica struct {
	mu    sync.Mutex
	name  string
	addrs managerAddrs
	args  []string
	proc  *procManager
	bin   string
	kc    string
	dir   string
}

func (r *replica) start() error {
	p, err := startProcManager(r.bin, r.kc, r.dir, r.name, r.addrs, r.args)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
	return nil
}

func (r *replica) current() *procManager {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc
}

func (r *replica) isLeader(ctx context.Context) bool {
	p := r.current()
	select {
	case <-p.Done():
		return false
	default:
	}
	m, err := scrape(ctx, p.MetricsURL())
	return err == nil && m.sum("leader_election_master_status") == 1
}

// proxy is the Service in front of every replica's inbound server: it tries
// the replicas in random order and fails over on connection errors.
type proxy struct {
	mu       sync.Mutex
	backends []string
	srv      *http.Server
	url      string
	hc       *http.Client
}

func startProxy() (*proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{url: "http://" + l.Addr().String(), hc: &http.Client{Timeout: 10 * time.Second}}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

func (p *proxy) set(backends ...string) {
	p.mu.Lock()
	p.backends = backends
	p.mu.Unlock()
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 2<<20))
	p.mu.Lock()
	bs := append([]string(nil), p.backends...)
	p.mu.Unlock()
	rand.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
	for _, b := range bs {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, "http://"+b+r.URL.RequestURI(), bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := p.hc.Do(req)
		if err != nil {
			continue // that replica is down: try the next, as a Service would
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		resp.Body.Close()
		return
	}
	http.Error(w, "no replica available", http.StatusBadGateway)
}

func runSoak(ctx context.Context, cfg soakConfig) *report {
	rep := newReport(fmt.Sprintf("finch-operator soak (N=%d)", cfg.n))
	rep.Meta["date"] = time.Now().UTC().Format(time.RFC3339)
	rep.Meta["machine"] = machine()
	rep.Meta["load at start"] = loadAvg()
	rep.Meta["manager"] = managerDesc(false, cfg.managerBin, cfg.managerArgs)
	rep.Meta["seed"] = fmt.Sprint(cfg.seed)
	rep.Meta["run dir"] = cfg.runDir
	rep.Meta["budget"] = fmt.Sprintf("FinchApp.spec.rateLimit = simulator limit = %d per %v", cfg.requests, cfg.window)
	if err := soak(ctx, cfg, rep); err != nil {
		rep.fail("%v", err)
	}
	rep.Meta["load at end"] = loadAvg()
	return rep
}

func soak(ctx context.Context, cfg soakConfig, rep *report) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	rng := rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15))
	between := func(a, b time.Duration) time.Duration { return a + time.Duration(rng.Int64N(int64(b-a)+1)) }

	logf("starting envtest")
	w, err := startWorld(cfg.runDir)
	if err != nil {
		return err
	}
	defer w.stop()
	ctx, cancelWatches := context.WithCancel(ctx)
	defer cancelWatches()
	sim, err := startSim()
	if err != nil {
		return err
	}
	defer sim.close()
	px, err := startProxy()
	if err != nil {
		return err
	}
	defer px.srv.Close()
	hook := webhookSecret()
	sim.AddApp(finchsim.AppConfig{ClientID: "soak", ClientSecret: "soak-secret",
		WebhookURL: px.url + "/webhooks/" + nsSoak + "/" + appA, WebhookSecret: hook,
		RateLimit: finchsim.RateLimit{Requests: cfg.requests, Window: cfg.window}})
	if err := w.createApp(ctx, appSpec{ns: nsSoak, name: appA, clientID: "soak", clientSecret: "soak-secret",
		apiURL: sim.URL, requests: int32(cfg.requests), window: cfg.window, webhookSecretB64: hook}); err != nil {
		return err
	}
	if err := w.namespace(ctx, nsLeases); err != nil {
		return err
	}
	tr, err := startTracker(ctx, w)
	if err != nil {
		return err
	}
	newReplica := func(name string, args []string) (*replica, error) {
		a, err := newAddrs()
		if err != nil {
			return nil, err
		}
		return &replica{name: name, addrs: a, args: args, bin: cfg.managerBin, kc: w.kubeconfig, dir: cfg.runDir}, nil
	}
	stopAll := []*replica{}
	defer func() {
		for _, r := range stopAll {
			if p := r.current(); p != nil {
				_ = p.Stop(syscall.SIGTERM, 20*time.Second)
			}
		}
	}()

	st := &soakState{t0: time.Now()}
	injectWindow := func(what, endpoint string, f finchsim.Fault, at, dur time.Duration, base time.Time, wg *sync.WaitGroup) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sleepUntil(ctx, base.Add(at))
			f.Count = -1
			s := time.Now()
			sim.InjectFault(endpoint, f)
			sleepUntil(ctx, s.Add(dur))
			sim.ClearFaults()
			st.record(what, s, time.Now())
		}()
	}

	// ---- Stage 1: one replica, Finch faults, SIGKILL + restart at random moments.
	r1, err := newReplica("replica-1", cfg.managerArgs)
	if err != nil {
		return err
	}
	stopAll = append(stopAll, r1)
	if err := r1.start(); err != nil {
		return err
	}
	px.set(r1.addrs.inbound)
	if _, err := waitMetrics(ctx, r1.current(), 60*time.Second); err != nil {
		return err
	}
	if err := waitAppsReady(ctx, w, 60*time.Second, nsSoak); err != nil {
		return err
	}
	logf("stage 1: %d connections over 30 s, faults and 2 crashes", cfg.n)
	calls0 := sim.CallCounts()
	t1 := time.Now()
	st.t0 = t1
	var wg sync.WaitGroup
	// Connections arrive over 30 s; the faults and crashes fall inside that.
	injectWindow("5xx burst (503 on every endpoint)", finchsim.EndpointAny, finchsim.Fault{Status: 503}, 3*time.Second, 3*time.Second, t1, &wg)
	injectWindow(injected429, finchsim.EndpointAny, finchsim.Fault{Status: 429, RetryAfter: 2 * time.Second}, 9*time.Second, 3*time.Second, t1, &wg)
	injectWindow("2 s latency (every endpoint)", finchsim.EndpointAny, finchsim.Fault{Latency: 2 * time.Second}, 15*time.Second, 5*time.Second, t1, &wg)
	injectWindow("commit-then-drop (POST /connect/sessions)", finchsim.EndpointCreateSession, finchsim.Fault{CommitThenDrop: true}, 22*time.Second, 4*time.Second, t1, &wg)
	crash := func(r *replica, at time.Duration, down time.Duration) {
		defer wg.Done()
		sleepUntil(ctx, t1.Add(at))
		p := r.current()
		k := time.Now()
		_ = p.Stop(syscall.SIGKILL, 10*time.Second)
		sleepUntil(ctx, k.Add(down))
		if err := r.start(); err != nil {
			rep.fail("restart %s: %v", r.name, err)
			return
		}
		st.record(fmt.Sprintf("SIGKILL %s, restarted after %.1fs", r.name, down.Seconds()), k, r.current().Started())
	}
	wg.Add(2)
	go crash(r1, between(4*time.Second, 14*time.Second), between(500*time.Millisecond, 3*time.Second))
	go crash(r1, between(16*time.Second, 28*time.Second), between(500*time.Millisecond, 3*time.Second))
	if err := createConns(ctx, w.c, nsSoak, "conn", 0, cfg.n, cfg.workers, float64(cfg.n)/30, nil); err != nil {
		return err
	}
	wg.Wait()
	keys1 := keysFor(nsSoak, "conn", 0, cfg.n)
	if err := tr.waitCount(ctx, "stage 1 AwaitingConnect", "", keys1, cfg.n, (*connState).awaiting, 10*time.Minute); err != nil {
		return err
	}
	last1, _ := tr.lastTime(keys1, func(s *connState) time.Time { return s.awaitingAt })
	rep.goal("stage 1", fmt.Sprintf("%d connections AwaitingConnect (faults + 2 SIGKILLs)", cfg.n), fmt.Sprintf("all, %s after start", secs(last1.Sub(t1))), "all converge", true)

	// ---- Stage 2: connect a fraction (embedded flow) while introspection fails for a while.
	k := int(math.Round(float64(cfg.n) * cfg.reauthFrac))
	sel := make([]types.NamespacedName, 0, k)
	for i := 0; i < k; i++ {
		sel = append(sel, keys1[i*(cfg.n/k)])
	}
	logf("stage 2: connecting %d connections, 503 on GET /introspect for 2 s", k)
	t2 := time.Now()
	injectWindow("5xx burst (503 on GET /introspect)", finchsim.EndpointIntrospect, finchsim.Fault{Status: 503}, 0, 2*time.Second, t2, &wg)
	if err := parallel(ctx, cfg.workers, sel, func(key types.NamespacedName) error {
		s, _ := tr.get(key)
		code, err := sim.CompleteSession(s.sessID, finchsim.Completion{})
		if err != nil {
			return fmt.Errorf("complete %s: %w", key.Name, err)
		}
		return w.c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{GenerateName: key.Name + "-code-", Namespace: key.Namespace,
				Labels: map[string]string{finchv1.ConnectionLabel: key.Name}},
			Type: finchv1.CodeSecretType, StringData: map[string]string{finchv1.CodeKey: code},
		})
	}); err != nil {
		return err
	}
	wg.Wait()
	if err := tr.waitCount(ctx, "stage 2 Connected", "", sel, k, (*connState).connected, 10*time.Minute); err != nil {
		return err
	}
	last2, _ := tr.lastTime(sel, func(s *connState) time.Time { return s.connectedAt })
	rep.goal("stage 2", fmt.Sprintf("%d connected via code Secrets (introspect 503 for 2 s)", k), fmt.Sprintf("all, %s", secs(last2.Sub(t2))), "all converge", true)

	// ---- Stage 3: two replicas with leader election; new connections and a
	// reauth webhook storm; the leader is SIGKILLed.
	logf("stage 3: two replicas with leader election")
	_ = r1.current().Stop(syscall.SIGTERM, 30*time.Second)
	le := append([]string{"--leader-elect", "--leader-election-namespace=" + nsLeases}, cfg.managerArgs...)
	r1.args = le
	r2, err := newReplica("replica-2", le)
	if err != nil {
		return err
	}
	stopAll = append(stopAll, r2)
	for _, r := range []*replica{r1, r2} {
		if err := r.start(); err != nil {
			return err
		}
	}
	px.set(r1.addrs.inbound, r2.addrs.inbound)
	var leader, standby *replica
	for deadline := time.Now().Add(90 * time.Second); leader == nil; {
		for _, r := range []*replica{r1, r2} {
			if r.isLeader(ctx) {
				leader = r
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no leader elected after 90 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	standby = r2
	if leader == r2 {
		standby = r1
	}
	if err := waitUp(ctx, standby.current(), 60*time.Second); err != nil {
		return err
	}
	late := int(math.Max(1, math.Round(float64(cfg.n)/10)))
	drops := int(math.Max(1, math.Round(float64(k)/5)))
	logf("stage 3: leader %s; %d new connections, %d flipped to reauth, %d reauth responses dropped after commit, leader SIGKILL", leader.name, late, k, drops)
	connIDs := make([]string, 0, k)
	for _, key := range sel {
		s, _ := tr.get(key)
		connIDs = append(connIDs, s.connID)
	}
	t3 := time.Now()
	sim.InjectFault(finchsim.EndpointReauthSession, finchsim.Fault{CommitThenDrop: true, Count: drops})
	dropsAt := sim.Responses(finchsim.EndpointReauthSession, 0)
	wg.Add(1)
	go func() { // the drop fault clears when its last use is consumed
		defer wg.Done()
		for end := time.Now().Add(5 * time.Minute); time.Now().Before(end) && ctx.Err() == nil; {
			if sim.Responses(finchsim.EndpointReauthSession, 0)-dropsAt >= drops {
				st.record(fmt.Sprintf("commit-then-drop on %d reauthenticate calls", drops), t3, time.Now())
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	injectWindow("5xx burst (503 on every endpoint)", finchsim.EndpointAny, finchsim.Fault{Status: 503}, 1*time.Second, 2*time.Second, t3, &wg)
	var takeover time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		sleepUntil(ctx, t3.Add(between(1*time.Second, 4*time.Second)))
		k := time.Now()
		_ = leader.current().Stop(syscall.SIGKILL, 10*time.Second)
		for end := time.Now().Add(2 * time.Minute); time.Now().Before(end) && ctx.Err() == nil; {
			if standby.isLeader(ctx) {
				takeover = time.Since(k)
				st.record(fmt.Sprintf("SIGKILL leader %s (%s took over)", leader.name, standby.name), k, time.Now())
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := leader.start(); err != nil { // back as the standby
			rep.fail("restart %s: %v", leader.name, err)
		}
	}()
	for _, id := range connIDs {
		go func() {
			if err := sim.SetConnectionStatus(id, "reauth"); err != nil {
				rep.fail("flip %s: %v", id, err)
			}
		}()
	}
	if err := createConns(ctx, w.c, nsSoak, "late", 0, late, cfg.workers, float64(late)/5, nil); err != nil {
		return err
	}
	keysLate := keysFor(nsSoak, "late", 0, late)
	if err := tr.waitCount(ctx, "stage 3 late AwaitingConnect", "", keysLate, late, (*connState).awaiting, 10*time.Minute); err != nil {
		return err
	}
	if err := tr.waitCount(ctx, "stage 3 reauth sessions", "", sel, k, (*connState).reauth, 10*time.Minute); err != nil {
		return err
	}
	wg.Wait()
	sim.WaitWebhooks(30 * time.Second)
	last3a, _ := tr.lastTime(keysLate, func(s *connState) time.Time { return s.awaitingAt })
	last3b, _ := tr.lastTime(sel, func(s *connState) time.Time { return s.reauthAt })
	rep.goal("stage 3", fmt.Sprintf("%d new connections AwaitingConnect", late), fmt.Sprintf("all, %s", secs(last3a.Sub(t3))), "all converge", true)
	rep.goal("stage 3", fmt.Sprintf("%d flipped to reauth have a reauth session", k), fmt.Sprintf("all, %s", secs(last3b.Sub(t3))), "all converge", true)
	rep.add("stage 3", "leader takeover after SIGKILL", secs(takeover))
	rep.add("stage 3", "webhooks", fmt.Sprintf("delivered %d, attempts %d, given up %d", sim.WebhookDeliveries(), sim.WebhookAttempts(), sim.WebhookFailures()))

	// Settle, then check.
	time.Sleep(5 * time.Second)
	analyzeSoak(ctx, cfg, w, tr, sim, st, rep, keys1, sel, keysLate, calls0)
	return nil
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func analyzeSoak(ctx context.Context, cfg soakConfig, w *world, tr *tracker, sim *simServer, st *soakState, rep *report,
	keys1, sel, keysLate []types.NamespacedName, calls0 map[string]int) {
	flipped := map[types.NamespacedName]bool{}
	for _, k := range sel {
		flipped[k] = true
	}
	// Final state from the API server (not the watch).
	list := &finchv1.FinchConnectionList{}
	if err := w.c.List(ctx, list, client.InNamespace(nsSoak)); err != nil {
		rep.fail("list: %v", err)
		return
	}
	bad := []string{}
	for _, c := range list.Items {
		key := client.ObjectKeyFromObject(&c)
		s := c.Status
		want := finchv1.PhaseAwaitingConnect
		wantKind := finchv1.SessionConnect
		if flipped[key] {
			want, wantKind = finchv1.PhaseReauthRequired, finchv1.SessionReauthenticate
		}
		if s.Phase != want || s.Session == nil || s.Session.Kind != wantKind || conditionTrue(s.Conditions, finchv1.ConditionStalled) || s.ObservedGeneration != c.Generation {
			bad = append(bad, fmt.Sprintf("%s: phase %s", c.Name, s.Phase))
		}
	}
	total := len(keys1) + len(keysLate)
	rep.goal("result", "FinchConnections converged (AwaitingConnect, or ReauthRequired if flipped)", fmt.Sprintf("%d of %d", len(list.Items)-len(bad), total), "all", len(bad) == 0 && len(list.Items) == total)
	if len(bad) > 0 {
		rep.fail("not converged: %s", strings.Join(bad[:min(10, len(bad))], "; "))
	}

	// Duplicates at Finch.
	sessions := sim.Sessions()
	connectByCustomer := map[string]int{}
	reauthByConn := map[string]int{}
	refreshes := 0
	for _, s := range sessions {
		switch s.Kind {
		case "connect":
			connectByCustomer[s.CustomerID]++
			refreshes += s.Refreshes
		case "reauthenticate":
			reauthByConn[s.ConnectionID]++
		}
	}
	dupSessions := 0
	for _, n := range connectByCustomer {
		dupSessions += n - 1
	}
	connByCustomer := map[string]int{}
	for _, c := range sim.Connections() {
		connByCustomer[c.CustomerID]++
	}
	dupConns := 0
	for _, n := range connByCustomer {
		dupConns += n - 1
	}
	rep.goal("result", "duplicate Connect sessions per customer", fmt.Sprint(dupSessions), "0", dupSessions == 0)
	rep.goal("result", "duplicate connections per customer", fmt.Sprint(dupConns), "0", dupConns == 0)
	extraReauth := 0
	for _, n := range reauthByConn {
		extraReauth += n - 1
	}
	dropped := sim.Responses(finchsim.EndpointReauthSession, 0)
	rep.goal("result", "extra reauth sessions minted", fmt.Sprintf("%d (reauth responses dropped after commit: %d; leader kills: 1)", extraReauth, dropped),
		"<= drops + in-flight at kills", extraReauth <= dropped+cfg.workers)
	rep.add("result", "Connect sessions refreshed (same session_id, no new session)", fmt.Sprint(refreshes))

	// Does status point at the live session Finch knows?
	bySession := map[string]finchsim.SessionInfo{}
	for _, s := range sessions {
		bySession[s.ID] = s
	}
	stale := 0
	for _, c := range list.Items {
		if c.Status.Session == nil {
			continue
		}
		s, ok := bySession[c.Status.Session.ID]
		if !ok || s.Completed {
			stale++
		}
	}
	rep.goal("result", "status sessions unknown to Finch or already used", fmt.Sprint(stale), "0", stale == 0)

	// Economy under faults.
	dist := st.all()
	calls := diffCounts(sim.CallCounts(), calls0)
	k := len(sel)
	minimal := total + 3*k // one session each; token + introspect + reauth for the flipped ones
	ratio := float64(totalCalls(calls)) / float64(minimal)
	rep.goal("result", "Finch calls / minimal calls", fmt.Sprintf("%.2f (%d / %d)", ratio, totalCalls(calls), minimal), "<= 1.5", ratio <= 1.5)
	rep.add("result", "Finch calls by endpoint", fmt.Sprint(calls))
	ok2xx := 0
	natural429 := 0
	for _, a := range sim.answersSnapshot() {
		if a.status/100 == 2 {
			ok2xx++
		}
		if a.status == 429 {
			injected := false
			for _, d := range dist {
				if d.what == injected429 && !a.at.Before(d.start) && !a.at.After(d.end.Add(time.Second)) {
					injected = true
				}
			}
			if !injected {
				natural429++
			}
		}
	}
	rep.add("result", "successful (2xx) Finch calls / minimal", fmt.Sprintf("%.2f (%d / %d): the rest were answered by injected faults", float64(ok2xx)/float64(minimal), ok2xx, minimal))
	rep.goal("result", "429s from the simulator's own rate limit (not injected)", fmt.Sprint(natural429), "0", natural429 == 0)
	resp := sim.ResponseCounts()
	var parts []string
	for ep, m := range resp {
		for code, n := range m {
			if code != 200 && code != 201 {
				parts = append(parts, fmt.Sprintf("%s %d x%d", ep, code, n))
			}
		}
	}
	sort.Strings(parts)
	rep.add("result", "non-2xx responses (0 = dropped after commit)", strings.Join(parts, "; "))

	// Longest wait after a disturbance cleared.
	worst, worstKey, worstWhat := time.Duration(0), "", ""
	var waits []time.Duration
	for key, s := range tr.snapshot(nsSoak) {
		ready, from := s.awaitingAt, s.firstSeen
		if flipped[key] {
			ready = s.reauthAt
			from = time.Time{} // flipped in stage 3: any disturbance of stage 3 counts
			for _, d := range dist {
				if strings.Contains(d.what, "leader") || strings.Contains(d.what, "reauthenticate") {
					if from.IsZero() || d.start.Before(from) {
						from = d.start
					}
				}
			}
		}
		if ready.IsZero() {
			continue
		}
		var cleared *disturbance
		for i := range dist {
			d := &dist[i]
			if !d.end.After(ready) && d.end.After(from) {
				cleared = d
			}
		}
		if cleared == nil {
			continue
		}
		wait := ready.Sub(cleared.end)
		waits = append(waits, wait)
		if wait > worst {
			worst, worstKey, worstWhat = wait, key.Name, cleared.what
		}
	}
	sort.Slice(waits, func(i, j int) bool { return waits[i] < waits[j] })
	p50, p95 := time.Duration(0), time.Duration(0)
	if len(waits) > 0 {
		p50, p95 = waits[len(waits)/2], waits[len(waits)*95/100]
	}
	rep.add("result", "longest wait after a fault cleared", fmt.Sprintf("%s (%s, after %q); p50 %s, p95 %s over %d affected connections", secs(worst), worstKey, worstWhat, secs(p50), secs(p95), len(waits)))
	for _, d := range dist {
		rep.add("disturbances", d.what, fmt.Sprintf("+%.1fs .. +%.1fs", d.start.Sub(st.t0).Seconds(), d.end.Sub(st.t0).Seconds()))
	}
}
