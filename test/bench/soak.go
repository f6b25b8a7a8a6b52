package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

type soakConfig struct {
	common
	seed     uint64
	requests int
	window   time.Duration
}

func (s *soakConfig) bindFlags() {
	flag.Uint64Var(&s.seed, "seed", 0, "soak: random seed (0: from the clock)")
	flag.IntVar(&s.requests, "soak-requests", 200, "soak: budget requests per window (FinchApp and simulator)")
	flag.DurationVar(&s.window, "soak-window", 5*time.Second, "soak: budget window")
}

const (
	nsSoak      = "soak"
	nsLeases    = "finch-system"
	injected429 = "429 with Retry-After 2s (every endpoint)"
)

// run is `make soak`: resilience under Finch faults and manager kills.
func (cfg soakConfig) run(ctx context.Context) *report {
	if cfg.n == 0 {
		cfg.n = 500
	}
	if cfg.timeout == 0 {
		cfg.timeout = 20 * time.Minute
	}
	if cfg.seed == 0 {
		cfg.seed = uint64(time.Now().UnixNano())
	}
	rep := newReport(fmt.Sprintf("finch-operator soak (N=%d)", cfg.n), cfg.common)
	rep.Meta["seed"] = fmt.Sprint(cfg.seed)
	rep.Meta["budget"] = fmt.Sprintf("FinchApp.spec.rateLimit = simulator limit = %d per %v", cfg.requests, cfg.window)
	if err := soak(ctx, cfg, rep); err != nil {
		rep.fail("%v", err)
	}
	return rep
}

// soakRun is one soak: three stages, then the analysis of the final state.
type soakRun struct {
	soakConfig
	*harness
	rep      *report
	rng      *rand.Rand
	sim      *simServer
	px       *proxy
	st       *soakState
	wg       sync.WaitGroup // the fault windows and kills of the current stage
	r1, r2   *replica
	calls0   map[string]int         // simulator calls before stage 1
	keys1    []types.NamespacedName // stage 1's connections
	sel      []types.NamespacedName // connected in stage 2, flipped to reauth in stage 3
	keysLate []types.NamespacedName // created in stage 3
	takeover time.Duration
}

func soak(ctx context.Context, cfg soakConfig, rep *report) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	h, ctx, err := startHarness(ctx, cfg.common)
	if err != nil {
		return err
	}
	defer h.close()
	s := &soakRun{soakConfig: cfg, harness: h, rep: rep, st: &soakState{t0: time.Now()},
		rng: rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15))}
	for _, stage := range []func(context.Context) error{s.setup, s.stage1, s.stage2, s.stage3} {
		if err := stage(ctx); err != nil {
			return err
		}
	}
	time.Sleep(5 * time.Second) // settle, then check
	s.analyze(ctx)
	return nil
}

func (s *soakRun) between(a, b time.Duration) time.Duration {
	return a + time.Duration(s.rng.Int64N(int64(b-a)+1))
}

func (s *soakRun) setup(ctx context.Context) error {
	var err error
	if s.sim, err = s.startSim(); err != nil {
		return err
	}
	if s.px, err = startProxy(); err != nil {
		return err
	}
	s.onClose(func() { _ = s.px.srv.Close() })
	rl := finchsim.RateLimit{Requests: s.requests, Window: s.window}
	if err := s.createApp(ctx, nsSoak, s.sim, finchsim.AppConfig{ClientID: "soak", ClientSecret: "soak-secret",
		WebhookURL: s.px.url + "/webhooks/" + nsSoak + "/" + appA, WebhookSecret: webhookSecret(), RateLimit: rl}, rl); err != nil {
		return err
	}
	s.onClose(func() { s.r1.stop(); s.r2.stop() })
	return s.namespace(ctx, nsLeases)
}

// stage1: one replica; connections arrive over 30 s, and Finch faults and two
// SIGKILLs of the manager (restarted after a random pause) fall inside that.
func (s *soakRun) stage1(ctx context.Context) error {
	var err error
	if s.r1, err = s.newReplica("replica-1", s.managerArgs); err != nil {
		return err
	}
	if err := s.r1.start(); err != nil {
		return err
	}
	s.px.set(s.r1.addrs.inbound)
	if err := waitMetrics(ctx, s.r1.current(), 60*time.Second, true); err != nil {
		return err
	}
	if err := waitAppsReady(ctx, s.harness, 60*time.Second, nsSoak); err != nil {
		return err
	}
	logf("stage 1: %d connections over 30 s, faults and 2 crashes", s.n)
	s.calls0 = s.sim.CallCounts()
	t1 := time.Now()
	s.st.t0 = t1
	s.fault(ctx, "5xx burst (503 on every endpoint)", finchsim.EndpointAny, finchsim.Fault{Status: 503}, t1.Add(3*time.Second), 3*time.Second)
	s.fault(ctx, injected429, finchsim.EndpointAny, finchsim.Fault{Status: 429, RetryAfter: 2 * time.Second}, t1.Add(9*time.Second), 3*time.Second)
	s.fault(ctx, "2 s latency (every endpoint)", finchsim.EndpointAny, finchsim.Fault{Latency: 2 * time.Second}, t1.Add(15*time.Second), 5*time.Second)
	s.fault(ctx, "commit-then-drop (POST /connect/sessions)", finchsim.EndpointCreateSession, finchsim.Fault{CommitThenDrop: true}, t1.Add(22*time.Second), 4*time.Second)
	s.crash(ctx, s.r1, t1.Add(s.between(4*time.Second, 14*time.Second)), s.between(500*time.Millisecond, 3*time.Second))
	s.crash(ctx, s.r1, t1.Add(s.between(16*time.Second, 28*time.Second)), s.between(500*time.Millisecond, 3*time.Second))
	if err := createConns(ctx, s.c, nsSoak, "conn", s.n, s.workers, float64(s.n)/30, nil); err != nil {
		return err
	}
	s.wg.Wait()
	s.keys1 = keysFor(nsSoak, "conn", s.n)
	if err := s.tr.waitCount(ctx, "stage 1 AwaitingConnect", s.keys1, (*connState).awaiting, 10*time.Minute); err != nil {
		return err
	}
	last := s.tr.latest(s.keys1, tAwaiting)
	s.rep.goal("stage 1", fmt.Sprintf("%d connections AwaitingConnect (faults + 2 SIGKILLs)", s.n), fmt.Sprintf("all, %s after start", secs(last.Sub(t1))), "all converge", true)
	return nil
}

// stage2 connects a fraction (embedded flow) while introspection fails for a while.
func (s *soakRun) stage2(ctx context.Context) error {
	s.sel = spread(s.keys1, int(math.Round(float64(s.n)*s.reauthFrac)))
	k := len(s.sel)
	logf("stage 2: connecting %d connections, 503 on GET /introspect for 2 s", k)
	t2 := time.Now()
	s.fault(ctx, "5xx burst (503 on GET /introspect)", finchsim.EndpointIntrospect, finchsim.Fault{Status: 503}, t2, 2*time.Second)
	if err := s.handOver(ctx, s.sim, s.workers, s.sel); err != nil {
		return err
	}
	s.wg.Wait()
	if err := s.tr.waitCount(ctx, "stage 2 Connected", s.sel, (*connState).connected, 10*time.Minute); err != nil {
		return err
	}
	last := s.tr.latest(s.sel, tConnected)
	s.rep.goal("stage 2", fmt.Sprintf("%d connected via code Secrets (introspect 503 for 2 s)", k), fmt.Sprintf("all, %s", secs(last.Sub(t2))), "all converge", true)
	return nil
}

// stage3: two replicas under leader election; new connections and a reauth
// webhook storm while reauth responses are dropped after commit, Finch
// answers 503 for 2 s and the leader is SIGKILLed.
func (s *soakRun) stage3(ctx context.Context) error {
	leader, standby, err := s.elect(ctx)
	if err != nil {
		return err
	}
	k := len(s.sel)
	late := int(math.Max(1, math.Round(float64(s.n)/10)))
	drops := int(math.Max(1, math.Round(float64(k)/5)))
	logf("stage 3: leader %s; %d new connections, %d flipped to reauth, %d reauth responses dropped after commit, leader SIGKILL", leader.name, late, k, drops)
	ids, err := s.connIDs(s.sel)
	if err != nil {
		return err
	}
	t3 := time.Now()
	s.dropReauth(ctx, drops, t3)
	s.fault(ctx, "5xx burst (503 on every endpoint)", finchsim.EndpointAny, finchsim.Fault{Status: 503}, t3.Add(time.Second), 2*time.Second)
	s.killLeader(ctx, leader, standby, t3.Add(s.between(1*time.Second, 4*time.Second)))
	go func() {
		if _, err := flipToReauth(s.sim, ids); err != nil {
			s.rep.fail("%v", err)
		}
	}()
	if err := createConns(ctx, s.c, nsSoak, "late", late, s.workers, float64(late)/5, nil); err != nil {
		return err
	}
	s.keysLate = keysFor(nsSoak, "late", late)
	if err := s.tr.waitCount(ctx, "stage 3 late AwaitingConnect", s.keysLate, (*connState).awaiting, 10*time.Minute); err != nil {
		return err
	}
	if err := s.tr.waitCount(ctx, "stage 3 reauth sessions", s.sel, (*connState).reauth, 10*time.Minute); err != nil {
		return err
	}
	s.wg.Wait()
	s.sim.WaitWebhooks(30 * time.Second)
	r := s.rep
	r.goal("stage 3", fmt.Sprintf("%d new connections AwaitingConnect", late), fmt.Sprintf("all, %s", secs(s.tr.latest(s.keysLate, tAwaiting).Sub(t3))), "all converge", true)
	r.goal("stage 3", fmt.Sprintf("%d flipped to reauth have a reauth session", k), fmt.Sprintf("all, %s", secs(s.tr.latest(s.sel, tReauth).Sub(t3))), "all converge", true)
	r.add("stage 3", "leader takeover after SIGKILL", secs(s.takeover))
	r.add("stage 3", "webhooks", fmt.Sprintf("delivered %d, attempts %d, given up %d", s.sim.WebhookDeliveries(), s.sim.WebhookAttempts(), s.sim.WebhookFailures()))
	return nil
}

// elect restarts replica-1 beside replica-2, both under leader election, and
// waits for a leader and for the standby's metrics endpoint.
func (s *soakRun) elect(ctx context.Context) (leader, standby *replica, err error) {
	logf("stage 3: two replicas with leader election")
	_ = s.r1.current().Stop(syscall.SIGTERM, 30*time.Second)
	s.r1.args = append([]string{"--leader-elect", "--leader-election-namespace=" + nsLeases}, s.managerArgs...)
	if s.r2, err = s.newReplica("replica-2", s.r1.args); err != nil {
		return nil, nil, err
	}
	for _, r := range []*replica{s.r1, s.r2} {
		if err := r.start(); err != nil {
			return nil, nil, err
		}
	}
	s.px.set(s.r1.addrs.inbound, s.r2.addrs.inbound)
	err = poll(ctx, 200*time.Millisecond, 90*time.Second, func() (bool, error) {
		for _, r := range []*replica{s.r1, s.r2} {
			if r.isLeader(ctx) {
				leader = r
			}
		}
		return leader != nil, nil
	})
	if err := timedOut(err, "no leader elected after 90 s"); err != nil {
		return nil, nil, err
	}
	standby = s.r2
	if leader == s.r2 {
		standby = s.r1
	}
	return leader, standby, waitMetrics(ctx, standby.current(), 60*time.Second, false)
}

// fault injects f on endpoint from `at` for dur (a disturbance).
func (s *soakRun) fault(ctx context.Context, what, endpoint string, f finchsim.Fault, at time.Time, dur time.Duration) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sleepUntil(ctx, at)
		f.Count = -1
		start := time.Now()
		s.sim.InjectFault(endpoint, f)
		sleepUntil(ctx, start.Add(dur))
		s.sim.ClearFaults()
		s.st.record(what, start, time.Now())
	}()
}

// crash SIGKILLs r at `at` and starts it again `down` later.
func (s *soakRun) crash(ctx context.Context, r *replica, at time.Time, down time.Duration) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sleepUntil(ctx, at)
		k := time.Now()
		_ = r.current().Stop(syscall.SIGKILL, 10*time.Second)
		sleepUntil(ctx, k.Add(down))
		if err := r.start(); err != nil {
			s.rep.fail("restart %s: %v", r.name, err)
			return
		}
		s.st.record(fmt.Sprintf("SIGKILL %s, restarted after %.1fs", r.name, down.Seconds()), k, r.current().Started())
	}()
}

// dropReauth drops the next `drops` reauthenticate responses after commit;
// that disturbance clears when the last drop is used.
func (s *soakRun) dropReauth(ctx context.Context, drops int, from time.Time) {
	s.sim.InjectFault(finchsim.EndpointReauthSession, finchsim.Fault{CommitThenDrop: true, Count: drops})
	dropsAt := s.sim.Responses(finchsim.EndpointReauthSession, 0)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = poll(ctx, 20*time.Millisecond, 5*time.Minute, func() (bool, error) {
			done := s.sim.Responses(finchsim.EndpointReauthSession, 0)-dropsAt >= drops
			if done {
				s.st.record(fmt.Sprintf("commit-then-drop on %d reauthenticate calls", drops), from, time.Now())
			}
			return done, nil
		})
	}()
}

// killLeader SIGKILLs the leader at `at`, measures the standby's takeover and
// starts the killed replica again (as the new standby).
func (s *soakRun) killLeader(ctx context.Context, leader, standby *replica, at time.Time) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sleepUntil(ctx, at)
		k := time.Now()
		_ = leader.current().Stop(syscall.SIGKILL, 10*time.Second)
		_ = poll(ctx, 100*time.Millisecond, 2*time.Minute, func() (bool, error) {
			if !standby.isLeader(ctx) {
				return false, nil
			}
			s.takeover = time.Since(k)
			s.st.record(fmt.Sprintf("SIGKILL leader %s (%s took over)", leader.name, standby.name), k, time.Now())
			return true, nil
		})
		if err := leader.start(); err != nil {
			s.rep.fail("restart %s: %v", leader.name, err)
		}
	}()
}

// analyze checks the final state (from the API server, not the watch) and
// what Finch saw against the soak's goals.
func (s *soakRun) analyze(ctx context.Context) {
	list := &finchv1.FinchConnectionList{}
	if err := s.c.List(ctx, list, client.InNamespace(nsSoak)); err != nil {
		s.rep.fail("list: %v", err)
		return
	}
	flipped := map[types.NamespacedName]bool{}
	for _, k := range s.sel {
		flipped[k] = true
	}
	dist := s.st.all()
	s.checkConverged(list.Items, flipped)
	s.checkFinch(list.Items)
	s.checkCalls(dist)
	s.checkWaits(dist, flipped)
	for _, d := range dist {
		s.rep.add("disturbances", d.what, fmt.Sprintf("+%.1fs .. +%.1fs", d.start.Sub(s.st.t0).Seconds(), d.end.Sub(s.st.t0).Seconds()))
	}
}

func (s *soakRun) checkConverged(items []finchv1.FinchConnection, flipped map[types.NamespacedName]bool) {
	var bad []string
	unrecorded := 0
	for _, c := range items {
		st, want, kind := c.Status, finchv1.PhaseAwaitingConnect, finchv1.SessionConnect
		if flipped[client.ObjectKeyFromObject(&c)] {
			want, kind = finchv1.PhaseReauthRequired, finchv1.SessionReauthenticate
		}
		if pc := st.PendingCall; st.Phase == want && st.Session == nil && pc != nil && pc.Kind == finchv1.PendingReauthenticate {
			// The leader died between the reauthenticate call and its status
			// write: the operator rightly waits for that link instead of
			// minting a second one (ReauthSessionUnrecorded).
			unrecorded++
			continue
		}
		if st.Phase != want || st.Session == nil || st.Session.Kind != kind || meta.IsStatusConditionTrue(st.Conditions, finchv1.ConditionStalled) || st.ObservedGeneration != c.Generation {
			bad = append(bad, fmt.Sprintf("%s: phase %s", c.Name, st.Phase))
		}
	}
	total := len(s.keys1) + len(s.keysLate)
	s.rep.add("result", "reauthentication links issued but not recorded (leader killed between call and write; no second one minted)", fmt.Sprint(unrecorded))
	s.rep.goal("result", "FinchConnections converged (AwaitingConnect, or ReauthRequired if flipped)", fmt.Sprintf("%d of %d", len(items)-len(bad), total), "all", len(bad) == 0 && len(items) == total)
	if len(bad) > 0 {
		s.rep.fail("not converged: %s", strings.Join(bad[:min(10, len(bad))], "; "))
	}
}

// checkFinch counts duplicates at Finch and checks that every status points
// at a live session Finch knows.
func (s *soakRun) checkFinch(items []finchv1.FinchConnection) {
	connects, reauths, conns := map[string]int{}, map[string]int{}, map[string]int{}
	bySession := map[string]finchsim.SessionInfo{}
	refreshes := 0
	for _, x := range s.sim.Sessions() {
		bySession[x.ID] = x
		switch x.Kind {
		case "connect":
			connects[x.CustomerID]++
			refreshes += x.Refreshes
		case "reauthenticate":
			reauths[x.ConnectionID]++
		}
	}
	for _, c := range s.sim.Connections() {
		conns[c.CustomerID]++
	}
	stale := 0
	for _, c := range items {
		if c.Status.Session == nil {
			continue
		}
		if x, ok := bySession[c.Status.Session.ID]; !ok || x.Completed {
			stale++
		}
	}
	r, dupSessions, dupConns, extraReauth := s.rep, extra(connects), extra(conns), extra(reauths)
	dropped := s.sim.Responses(finchsim.EndpointReauthSession, 0)
	r.goal("result", "duplicate Connect sessions per customer", fmt.Sprint(dupSessions), "0", dupSessions == 0)
	r.goal("result", "duplicate connections per customer", fmt.Sprint(dupConns), "0", dupConns == 0)
	r.goal("result", "extra reauth sessions minted", fmt.Sprintf("%d (reauth responses dropped after commit: %d; leader kills: 1)", extraReauth, dropped),
		"<= drops + in-flight at kills", extraReauth <= dropped+s.workers)
	r.add("result", "Connect sessions refreshed (same session_id, no new session)", fmt.Sprint(refreshes))
	r.goal("result", "status sessions unknown to Finch or already used", fmt.Sprint(stale), "0", stale == 0)
}

// extra is the count beyond one per key.
func extra(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c - 1
	}
	return n
}

// checkCalls is the economy under faults.
func (s *soakRun) checkCalls(dist []disturbance) {
	calls := diff(s.sim.CallCounts(), s.calls0)
	minimal := len(s.keys1) + len(s.keysLate) + 3*len(s.sel) // one session each; token + introspect + reauth for the flipped ones
	ratio := float64(totalCalls(calls)) / float64(minimal)
	r := s.rep
	r.goal("result", "Finch calls / minimal calls", fmt.Sprintf("%.2f (%d / %d)", ratio, totalCalls(calls), minimal), "<= 1.5", ratio <= 1.5)
	r.add("result", "Finch calls by endpoint", fmt.Sprint(calls))
	ok2xx, natural429 := 0, 0
	for _, a := range s.sim.answersSnapshot() {
		if a.status/100 == 2 {
			ok2xx++
		}
		if a.status == 429 && !slices.ContainsFunc(dist, func(d disturbance) bool {
			return d.what == injected429 && !a.at.Before(d.start) && !a.at.After(d.end.Add(time.Second))
		}) {
			natural429++
		}
	}
	r.add("result", "successful (2xx) Finch calls / minimal", fmt.Sprintf("%.2f (%d / %d): the rest were answered by injected faults", float64(ok2xx)/float64(minimal), ok2xx, minimal))
	r.goal("result", "429s from the simulator's own rate limit (not injected)", fmt.Sprint(natural429), "0", natural429 == 0)
	var parts []string
	for ep, m := range s.sim.ResponseCounts() {
		for code, n := range m {
			if code != 200 && code != 201 {
				parts = append(parts, fmt.Sprintf("%s %d x%d", ep, code, n))
			}
		}
	}
	sort.Strings(parts)
	r.add("result", "non-2xx responses (0 = dropped after commit)", strings.Join(parts, "; "))
}

// checkWaits is the longest wait from a disturbance clearing to a connection
// being ready: the last disturbance that ended after the connection was first
// seen (flipped ones: after stage 3's first disturbance began) and before it
// was ready.
func (s *soakRun) checkWaits(dist []disturbance, flipped map[types.NamespacedName]bool) {
	var stage3 time.Time
	for _, d := range dist {
		if (strings.Contains(d.what, "leader") || strings.Contains(d.what, "reauthenticate")) && (stage3.IsZero() || d.start.Before(stage3)) {
			stage3 = d.start
		}
	}
	worst, worstKey, worstWhat := time.Duration(0), "", ""
	var waits []time.Duration
	for key, st := range s.tr.snapshot(nsSoak) {
		ready, from := st.awaitingAt, st.firstSeen
		if flipped[key] {
			ready, from = st.reauthAt, stage3
		}
		var cleared *disturbance
		for i, d := range dist { // sorted by end
			if !ready.IsZero() && !d.end.After(ready) && d.end.After(from) {
				cleared = &dist[i]
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
	slices.Sort(waits)
	p50, p95 := time.Duration(0), time.Duration(0)
	if len(waits) > 0 {
		p50, p95 = waits[len(waits)/2], waits[len(waits)*95/100]
	}
	s.rep.add("result", "longest wait after a fault cleared", fmt.Sprintf("%s (%s, after %q); p50 %s, p95 %s over %d affected connections", secs(worst), worstKey, worstWhat, secs(p50), secs(p95), len(waits)))
}
