package main

import (
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/connectops/finch-operator/internal/finchsim"
)

// simServer serves a finchsim.Sim on 127.0.0.1 through a middleware that
// records when each Finch API request arrived, so budget use can be computed
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
	at       time.Time
	endpoint string
	status   int
}

// statusWriter captures the status; Unwrap keeps Hijack (CommitThenDrop) working.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

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
	h := s.Sim.Handler()
	s.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key := r.Method + " " + r.URL.Path
			if !apiEndpoints[key] {
				h.ServeHTTP(w, r)
				return
			}
			now := time.Now()
			s.mu.Lock()
			s.arrivals[key] = append(s.arrivals[key], now)
			s.mu.Unlock()
			sw := &statusWriter{ResponseWriter: w}
			h.ServeHTTP(sw, r)
			s.mu.Lock()
			s.answers = append(s.answers, answer{at: time.Now(), endpoint: key, status: sw.status})
			s.mu.Unlock()
		}),
	}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
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

func diffCounts(after, before map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
