package main

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"sync"
	"syscall"
	"time"
)

// replica is one manager replica whose process may be killed and restarted.
type replica struct {
	mu     sync.Mutex
	name   string
	addrs  managerAddrs
	args   []string
	op     operator
	launch launcher
}

func (h *harness) newReplica(name string, args []string) (*replica, error) {
	a, err := newAddrs()
	if err != nil {
		return nil, err
	}
	return &replica{name: name, addrs: a, args: args, launch: h.launch}, nil
}

func (r *replica) start() error {
	op, err := r.launch.start(r.name, r.addrs, r.args)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.op = op
	r.mu.Unlock()
	return nil
}

func (r *replica) current() operator {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.op
}

func (r *replica) stop() {
	if r == nil {
		return
	}
	if op := r.current(); op != nil {
		_ = op.Stop(syscall.SIGTERM, 20*time.Second)
	}
}

func (r *replica) isLeader(ctx context.Context) bool {
	op := r.current()
	select {
	case <-op.Done():
		return false
	default:
	}
	m, err := scrape(ctx, op.MetricsURL())
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

// all returns the disturbances sorted by when they cleared.
func (s *soakState) all() []disturbance {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]disturbance(nil), s.dist...)
	sort.Slice(out, func(i, j int) bool { return out[i].end.Before(out[j].end) })
	return out
}
