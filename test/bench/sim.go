package main

import (
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/connectops/finch-operator/pkg/finchsim"
)

// simServer serves a finchsim.Sim on 127.0.0.1 and records when each Finch
// API request arrived and how it was answered, so budget use can be computed
// per rolling window (the simulator itself only counts).
type simServer struct {
	*finchsim.Sim
	URL string
	srv *http.Server

	mu       sync.Mutex
	arrivals map[string][]time.Time // endpoint -> arrival times
	answers  []answer
}

// answer is one Finch API response as the client saw it (status 0: dropped).
type answer struct {
	at     time.Time
	status int
}

var apiEndpoints = map[string]bool{
	finchsim.EndpointCreateSession: true,
	finchsim.EndpointReauthSession: true,
	finchsim.EndpointToken:         true,
	finchsim.EndpointIntrospect:    true,
	finchsim.EndpointDisconnect:    true,
	finchsim.EndpointSandboxStatus: true,
}

func startSim() (*simServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	url := "http://" + l.Addr().String()
	s := &simServer{Sim: finchsim.New(finchsim.Options{ConnectBaseURL: url}), URL: url, arrivals: map[string][]time.Time{}}
	s.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: s.record(s.Sim.Handler())}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

func (s *simServer) record(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.Path
		if !apiEndpoints[key] {
			h.ServeHTTP(w, r)
			return
		}
		s.mu.Lock()
		s.arrivals[key] = append(s.arrivals[key], time.Now())
		s.mu.Unlock()
		rec := &finchsim.StatusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		s.mu.Lock()
		s.answers = append(s.answers, answer{at: time.Now(), status: rec.Status})
		s.mu.Unlock()
	})
}

func (s *simServer) close() {
	_ = s.srv.Close()
	s.Sim.Close()
}

// arrivalsBetween returns the sorted arrival times of an endpoint in [from, to).
func (s *simServer) arrivalsBetween(endpoint string, from, to time.Time) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for _, t := range s.arrivals[endpoint] {
		if !t.Before(from) && t.Before(to) {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// answersSnapshot returns every recorded response.
func (s *simServer) answersSnapshot() []answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]answer(nil), s.answers...)
}

// totalCalls sums CallCounts over every Finch API endpoint.
func totalCalls(m map[string]int) int {
	n := 0
	for k, v := range m {
		if apiEndpoints[k] {
			n += v
		}
	}
	return n
}
