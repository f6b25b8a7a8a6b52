package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/controllers"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

const nsBacklog = "bench-backlog"

// backlogConfig: employers finishing Connect while a backlog of new
// connections waits for the session budget.
type backlogConfig struct {
	backlogN, backlogK int
	backlogRate        finchsim.RateLimit
}

func (c *backlogConfig) bindFlags() {
	flag.IntVar(&c.backlogN, "backlog-n", 10000, "new FinchConnections waiting for the session budget in the backlog phase")
	flag.IntVar(&c.backlogK, "backlog-k", 100, "codes handed over and reauth webhooks delivered during the backlog")
	c.backlogRate = finchsim.RateLimit{Requests: 20, Window: time.Minute}
	flag.IntVar(&c.backlogRate.Requests, "backlog-requests", 20, "backlog app budget per endpoint and window (Finch documents 20 per minute)")
	flag.DurationVar(&c.backlogRate.Window, "backlog-window", time.Minute, "backlog app budget window")
}

// backlog measures what an employer waits while backlogN new connections
// wait for the session budget: backlogK codes handed over (embedded flow)
// and backlogK reauth webhooks, paced at the app's budget so what is measured
// is the operator's queueing, not the budget of the token and reauth endpoints.
func (b *benchRun) backlog(ctx context.Context) error {
	n, k, rl := b.backlogN, b.backlogK, b.backlogRate
	if n == 0 || k == 0 {
		return nil
	}
	phaseStart := time.Now()
	sim, err := b.startSim()
	if err != nil {
		return err
	}
	open := finchsim.RateLimit{Requests: 100000, Window: time.Second}
	if err := b.createApp(ctx, nsBacklog, sim, finchsim.AppConfig{ClientID: "bench-b", ClientSecret: "bench-b-secret",
		WebhookURL: "http://" + b.addrs.inbound + "/webhooks/" + nsBacklog + "/" + appA, WebhookSecret: webhookSecret()}, open); err != nil {
		return err
	}
	if err := waitAppsReady(ctx, b.harness, time.Minute, nsBacklog); err != nil {
		return err
	}
	// 2k employers with sessions; k of them connect now (the reauth targets).
	logf("backlog: %d employers get sessions; %d connect", 2*k, k)
	if err := createConns(ctx, b.c, nsBacklog, "emp", 2*k, b.workers, 0, nil); err != nil {
		return err
	}
	emps := keysFor(nsBacklog, "emp", 2*k)
	if err := b.tr.waitCount(ctx, "backlog: employers AwaitingConnect", emps, (*connState).awaiting, 5*time.Minute); err != nil {
		return err
	}
	handoffs, reauths := emps[:k], emps[k:]
	if err := b.handOver(ctx, sim, b.workers, reauths); err != nil {
		return err
	}
	if err := b.tr.waitCount(ctx, "backlog: reauth targets Connected", reauths, (*connState).connected, 5*time.Minute); err != nil {
		return err
	}
	ids, err := b.connIDs(reauths)
	if err != nil {
		return err
	}
	// Finch's documented budget from now on, then the backlog.
	fa := &finchv1.FinchApp{}
	if err := b.c.Get(ctx, types.NamespacedName{Namespace: nsBacklog, Name: appA}, fa); err != nil {
		return err
	}
	fa.Spec.RateLimit = &finchv1.RateLimit{Requests: int32(rl.Requests), Window: &metav1.Duration{Duration: rl.Window}}
	if err := b.c.Update(ctx, fa); err != nil {
		return err
	}
	sim.SetRateLimit("bench-b", rl)
	lowered := time.Now()
	if err := waitAppsReady(ctx, b.harness, time.Minute, nsBacklog); err != nil {
		return err
	}
	logf("backlog: %d new connections wait for %d session calls per %v", n, rl.Requests, rl.Window)
	s, err := b.mark(ctx, sim)
	if err != nil {
		return err
	}
	if err := createConns(ctx, b.c, nsBacklog, "wait", n, b.workers, 0, nil); err != nil {
		return err
	}
	created := time.Since(s.at)
	// Every backlog connection has had its first pass (and waits).
	if err := poll(ctx, 500*time.Millisecond, 10*time.Minute, func() (bool, error) {
		m, err := scrape(ctx, b.op.MetricsURL())
		return err == nil && reconciles(m, "finchconnection")-reconciles(s.metrics, "finchconnection") >= float64(n), nil
	}); err != nil {
		return fmt.Errorf("backlog: first passes: %w", err)
	}
	// Each hand-off and each webhook costs one introspection (besides its
	// token or reauth call): one event per 1.25 slots keeps every endpoint
	// within its budget.
	pace := rl.Window / time.Duration(rl.Requests) * 5 / 4
	// The setup's introspections leave the app's window first, and the
	// earlier phases' calls the operator-wide IP budget's, so the hand-offs
	// meet only the backlog, not budget spent before it.
	sleepUntil(ctx, lowered.Add(rl.Window+2*time.Second))
	sleepUntil(ctx, phaseStart.Add(controllers.DefaultIPBudget.Window))
	logf("backlog: %d hand-offs and %d webhooks, alternating, one per %v", k, k, pace)
	m0, err := b.mark(ctx, sim)
	if err != nil {
		return err
	}
	handAt := make([]time.Time, k)
	flipAt := make([]time.Time, k)
	for i := range k {
		t0 := time.Now()
		handAt[i] = t0
		if err := b.handOver(ctx, sim, 1, handoffs[i:i+1]); err != nil {
			return err
		}
		sleepUntil(ctx, t0.Add(pace))
		flipAt[i] = time.Now()
		if err := sim.SetConnectionStatus(ids[i], "reauth"); err != nil {
			return err
		}
		sleepUntil(ctx, t0.Add(2*pace))
	}
	if err := b.tr.waitCount(ctx, "backlog: hand-offs Connected", handoffs, (*connState).connected, 5*time.Minute); err != nil {
		return err
	}
	if err := b.tr.waitCount(ctx, "backlog: reauth sessions", reauths, (*connState).reauth, 5*time.Minute); err != nil {
		return err
	}
	m1, err := b.mark(ctx, sim)
	if err != nil {
		return err
	}
	hand, hook := make([]time.Duration, k), make([]time.Duration, k)
	for i := range k {
		a, _ := b.tr.get(handoffs[i])
		c, _ := b.tr.get(reauths[i])
		hand[i], hook[i] = a.connectedAt.Sub(handAt[i]), c.reauthAt.Sub(flipAt[i])
	}
	calls := diff(m1.calls, m0.calls)
	waiting := b.tr.count(keysFor(nsBacklog, "wait", n), func(s *connState) bool { return s.sessID == "" })
	dur := m1.at.Sub(m0.at)
	r := b.rep
	r.add("backlog", "setup", fmt.Sprintf("%d connections created in %s; budget %d per %v per endpoint (Finch's documented figure)", n, secs(created), rl.Requests, rl.Window))
	p50h, p99h := quantile(hand, 0.5), quantile(hand, 0.99)
	p50w, p99w := quantile(hook, 0.5), quantile(hook, 0.99)
	r.goal("backlog", fmt.Sprintf("code hand-off -> Connected (%d, one per %v)", k, 2*pace), fmt.Sprintf("p50 %s, p99 %s, max %s", ms(p50h), ms(p99h), ms(slices.Max(hand))), "p99 <= 2 s", p99h <= 2*time.Second)
	r.goal("backlog", fmt.Sprintf("reauth webhook -> reauth session (%d)", k), fmt.Sprintf("p50 %s, p99 %s, max %s", ms(p50w), ms(p99w), ms(slices.Max(hook))), "p99 <= 2 s", p99w <= 2*time.Second)
	r.add("backlog", "meanwhile", fmt.Sprintf("%d of %d still waiting; Finch calls in %s: %v; %.1f reconciles/s; CPU %s",
		waiting, n, secs(dur), calls,
		(reconciles(m1.metrics, "finchconnection")-reconciles(m0.metrics, "finchconnection"))/dur.Seconds(), takeCPU().since(m0.cpu)))
	return nil
}

// quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
