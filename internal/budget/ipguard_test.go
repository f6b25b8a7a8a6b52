package budget

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeNow) add(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

func TestIPGuardDefaultPenaltyAndNoShortening(t *testing.T) {
	clock := &fakeNow{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	g := NewIPGuard(Config{})
	g.now = clock.now
	if cfg := g.Budget().Config(); cfg != DefaultIP {
		t.Errorf("default guard budget %+v, want Finch's %+v", cfg, DefaultIP)
	}
	// Finch documents no Retry-After: the guard pauses for the documented 60 minutes.
	g.penalize(0)
	if want := clock.now().Add(time.Hour); !g.PausedUntil().Equal(want) {
		t.Errorf("PausedUntil = %v, want now+60m", g.PausedUntil())
	}
	// A later, shorter answer does not cut the pause.
	g.penalize(time.Minute)
	if want := clock.now().Add(time.Hour); !g.PausedUntil().Equal(want) {
		t.Errorf("PausedUntil = %v after a shorter Retry-After, want still now+60m", g.PausedUntil())
	}
	clock.add(30 * time.Minute)
	g.penalize(50 * time.Minute)
	if want := clock.now().Add(50 * time.Minute); !g.PausedUntil().Equal(want) {
		t.Errorf("PausedUntil = %v, want extended to now+50m", g.PausedUntil())
	}
}

// One guard per API host key (scheme://host:port, the Finch client's HostKey,
// tested with it); a penalty at one host leaves the others' guards alone.
func TestIPGuardsOnePerHost(t *testing.T) {
	s := NewIPGuards(Config{Requests: 5, Window: time.Minute})
	get := func(key string) *IPGuard {
		t.Helper()
		g, err := s.For(key)
		if err != nil {
			t.Fatalf("For(%s): %v", key, err)
		}
		return g
	}
	finch := get("https://api.tryfinch.com:443")
	if get("https://api.tryfinch.com:443") != finch {
		t.Error("https://api.tryfinch.com:443 got a second guard")
	}
	if finch.Host() != "https://api.tryfinch.com:443" {
		t.Errorf("Host() = %q", finch.Host())
	}
	sim, stub := get("http://127.0.0.1:8090"), get("http://127.0.0.1:8091")
	if sim == stub || sim == finch || get("http://api.tryfinch.com:80") == finch {
		t.Fatal("different scheme, host or port share a guard")
	}
	if cfg := stub.Budget().Config(); cfg.Requests != 5 || cfg.Window != time.Minute {
		t.Errorf("guard budget %+v, want the set's", cfg)
	}
	stub.penalize(24 * time.Hour)
	if stub.PausedUntil().IsZero() || !sim.PausedUntil().IsZero() || !finch.PausedUntil().IsZero() {
		t.Errorf("penalty at the stub: stub %v, sim %v, finch %v; want only the stub paused", stub.PausedUntil(), sim.PausedUntil(), finch.PausedUntil())
	}
	if got := hostGauge(t, stub.Host()); got <= 0 || got > float64(time.Now().Add(time.Hour+time.Second).Unix()) {
		t.Errorf("penalty gauge for %s = %v, want at most an hour ahead", stub.Host(), got)
	}
	if got := hostGauge(t, sim.Host()); got != 0 {
		t.Errorf("penalty gauge for %s = %v, want 0", sim.Host(), got)
	}
}

// The set is bounded: past MaxIPGuards hosts it refuses new ones, and keeps
// serving the hosts it has.
func TestIPGuardsBounded(t *testing.T) {
	s := NewIPGuards(Config{})
	first, err := s.For("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	for port := 2; port <= MaxIPGuards; port++ {
		if _, err := s.For(fmt.Sprintf("http://127.0.0.1:%d", port)); err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
	}
	if _, err := s.For("http://127.0.0.1:65000"); !errors.Is(err, ErrTooManyHosts) {
		t.Errorf("host %d: %v, want ErrTooManyHosts", MaxIPGuards+1, err)
	}
	if g, err := s.For("http://127.0.0.1:1"); err != nil || g != first {
		t.Errorf("a known host after the bound: %v, %v", g, err)
	}
	for port := 1; port <= MaxIPGuards; port++ {
		ipPenaltyUntil.DeleteLabelValues(fmt.Sprintf("http://127.0.0.1:%d", port))
	}
}

// hostGauge reads finch_api_ip_penalty_until_timestamp_seconds{host=host}.
func hostGauge(t *testing.T, host string) float64 {
	t.Helper()
	g, err := ipPenaltyUntil.GetMetricWithLabelValues(host)
	if err != nil {
		t.Fatal(err)
	}
	m := &dto.Metric{}
	if err := g.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
