package inbound_test

import (
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/inbound"
)

// TestWebhookToReauthLatency measures, for N connected connections flipped to
// reauth one at a time, the time from the simulator sending the signed
// account.updated webhook (SetConnectionStatus) to the reauth session being
// visible in status through the manager's cache. It is a measurement, not a
// gate: it runs only with INBOUND_LATENCY_N set (N >= 100 recommended), e.g.
//
//	INBOUND_LATENCY_N=100 go test ./internal/inbound/ -run TestWebhookToReauthLatency -v -count=1
func TestWebhookToReauthLatency(t *testing.T) {
	nStr := os.Getenv("INBOUND_LATENCY_N")
	if nStr == "" {
		t.Skip("set INBOUND_LATENCY_N (e.g. 100) to run this measurement")
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 1 {
		t.Fatalf("INBOUND_LATENCY_N=%q: want a positive integer", nStr)
	}
	f := newFixture(t)
	g := f.g
	g.SetDefaultEventuallyTimeout(5 * time.Minute)

	// N connections, each connected through the real redirect flow.
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("conn-%04d", i)
		f.newConnection(names[i], names[i], nil)
	}
	setupStart := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	errs := make(chan error, n)
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var url string
			deadline := time.Now().Add(2 * time.Minute)
			for url == "" && time.Now().Before(deadline) {
				c := &finchv1.FinchConnection{}
				if err := f.e.cached.Get(f.ctx, client.ObjectKey{Namespace: f.ns, Name: name}, c); err == nil && c.Status.Session != nil {
					url = c.Status.Session.ConnectURL
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if url == "" {
				errs <- fmt.Errorf("%s: no Connect URL", name)
				return
			}
			resp, err := browser.Get(url)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("%s: callback answered %d", name, resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	connIDs := map[string]string{}
	g.Eventually(func(g Gomega) {
		list := &finchv1.FinchConnectionList{}
		g.Expect(f.e.cached.List(f.ctx, list, client.InNamespace(f.ns))).To(Succeed())
		connected := 0
		for _, c := range list.Items {
			if c.Status.Phase == finchv1.PhaseConnected && c.Status.ConnectionID != "" {
				connected++
				connIDs[c.Name] = c.Status.ConnectionID
			}
		}
		g.Expect(connected).To(Equal(n))
	}).Should(Succeed())
	t.Logf("setup: %d connections connected through the redirect flow in %v", n, time.Since(setupStart).Round(time.Millisecond))
	f.quiet()

	// Observe the cache: the first update showing a reauth session per connection.
	var mu sync.Mutex
	seen := map[string]chan time.Time{}
	for _, name := range names {
		seen[name] = make(chan time.Time, 1)
	}
	inf, err := f.e.mgr.GetCache().GetInformer(f.ctx, &finchv1.FinchConnection{})
	g.Expect(err).NotTo(HaveOccurred())
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{UpdateFunc: func(_, obj any) {
		c, ok := obj.(*finchv1.FinchConnection)
		if !ok || c.Namespace != f.ns || c.Status.Session == nil || c.Status.Session.Kind != finchv1.SessionReauthenticate {
			return
		}
		at := time.Now()
		mu.Lock()
		ch := seen[c.Name]
		mu.Unlock()
		select {
		case ch <- at:
		default:
		}
	}})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { _ = inf.RemoveEventHandler(reg) }()

	hookCount0, hookSum0 := histogram(inbound.RouteWebhook)
	latencies := make([]time.Duration, 0, n)
	for _, name := range names {
		start := time.Now()
		g.Expect(f.sim.SetConnectionStatus(connIDs[name], "reauth")).To(Succeed())
		select {
		case at := <-seen[name]:
			latencies = append(latencies, at.Sub(start))
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: no reauth session within 60s", name)
		}
	}
	g.Expect(f.sim.Calls("POST /connect/sessions/reauthenticate")).To(Equal(n))
	g.Expect(f.sim.WebhookDeliveries()).To(Equal(n))

	hookCount, hookSum := histogram(inbound.RouteWebhook)
	var handlerMean time.Duration
	if hookCount > hookCount0 {
		handlerMean = time.Duration((hookSum - hookSum0) / float64(hookCount-hookCount0) * float64(time.Second))
	}

	slices.Sort(latencies)
	var sum time.Duration
	for _, l := range latencies {
		sum += l
	}
	pct := func(p float64) time.Duration { // nearest rank
		i := int(math.Ceil(p/100*float64(len(latencies)))) - 1
		return latencies[max(i, 0)]
	}
	report := fmt.Sprintf("webhook -> reauth session in status, N=%d: median %v, p90 %v, p99 %v, min %v, max %v, mean %v",
		n, pct(50).Round(10*time.Microsecond), pct(90).Round(10*time.Microsecond), pct(99).Round(10*time.Microsecond),
		latencies[0].Round(10*time.Microsecond), latencies[len(latencies)-1].Round(10*time.Microsecond),
		(sum/time.Duration(n)).Round(10*time.Microsecond)) +
		fmt.Sprintf(" (webhook handler itself: mean %v over %d deliveries)", handlerMean.Round(10*time.Microsecond), hookCount-hookCount0)
	t.Log(report)
	fmt.Println(report)
}

// histogram reads the count and sum of finch_inbound_request_duration_seconds for a route.
func histogram(route string) (uint64, float64) {
	m := &dto.Metric{}
	if err := inbound.RequestDuration.WithLabelValues(route).(prometheus.Metric).Write(m); err != nil {
		return 0, 0
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}
