package inbound

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

func TestLRU(t *testing.T) {
	g := NewWithT(t)
	now := time.Unix(1000, 0)
	c := newLRU[int](2, time.Minute, func() time.Time { return now })
	c.Add("a", 1)
	c.Add("b", 2)
	g.Expect(c.Contains("a")).To(BeTrue()) // a is now the most recent
	c.Add("c", 3)                          // evicts b
	g.Expect(c.Contains("b")).To(BeFalse())
	v, ok := c.Get("a")
	g.Expect(ok).To(BeTrue())
	g.Expect(v).To(Equal(1))
	g.Expect(c.Len()).To(Equal(2))
	now = now.Add(time.Minute)
	g.Expect(c.Contains("a")).To(BeFalse(), "expired")
	g.Expect(c.Len()).To(Equal(1))
}

func TestEventLimiter(t *testing.T) {
	g := NewWithT(t)
	now := time.Unix(1000, 0)
	l := newEventLimiter(2, 10*time.Second, func() time.Time { return now })
	g.Expect(l.Allow("k")).To(BeTrue())
	g.Expect(l.Allow("k")).To(BeTrue())
	g.Expect(l.Allow("k")).To(BeFalse())
	g.Expect(l.Allow("other")).To(BeTrue())
	now = now.Add(10 * time.Second)
	g.Expect(l.Allow("k")).To(BeTrue())
	g.Expect(l.Allow("k")).To(BeFalse())
}

// Concurrent requests for one code share one exchange; a spent code's
// outcome is remembered, a failure that left the code unspent is not.
func TestCodeTracker(t *testing.T) {
	g := NewWithT(t)
	tr := newCodeTracker(10, time.Minute, time.Now)
	var calls atomic.Int32
	release := make(chan struct{})
	fn := func() (callbackAnswer, bool) {
		calls.Add(1)
		<-release
		return callbackAnswer{result: callbackConnected, page: pageConnected}, true
	}
	var wg sync.WaitGroup
	results := make(chan callbackAnswer, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, ok := tr.do(context.Background(), "k", fn)
			if ok {
				results <- out
			}
		}()
	}
	g.Eventually(calls.Load).Should(Equal(int32(1)))
	close(release)
	wg.Wait()
	close(results)
	n := 0
	for out := range results {
		g.Expect(out.result).To(Equal(callbackConnected))
		n++
	}
	g.Expect(n).To(Equal(5))
	g.Expect(calls.Load()).To(Equal(int32(1)))
	out, _ := tr.do(context.Background(), "k", fn)
	g.Expect(out.result).To(Equal(callbackConnected))
	g.Expect(calls.Load()).To(Equal(int32(1)), "remembered")

	for range 2 {
		tr.do(context.Background(), "unspent", func() (callbackAnswer, bool) {
			calls.Add(1)
			return callbackAnswer{result: callbackFinchUnavailable}, false
		})
	}
	g.Expect(calls.Load()).To(Equal(int32(3)), "a failure is retried")
}

func TestValidCode(t *testing.T) {
	g := NewWithT(t)
	g.Expect(validCode("90abecb6-2b8e-4e45-a4c1-6b4f8e0d1a2c")).To(BeTrue())
	g.Expect(validCode("")).To(BeFalse())
	g.Expect(validCode("a b")).To(BeFalse())
	g.Expect(validCode("é")).To(BeFalse())
	g.Expect(validCode(string(make([]byte, maxCodeLen+1)))).To(BeFalse())
}

// The Runnable serves on its address on every replica and shuts down with
// the manager's context.
func TestRunnable(t *testing.T) {
	g := NewWithT(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	addr := l.Addr().String()
	g.Expect(l.Close()).To(Succeed())

	srvr := New(Config{})
	r := srvr.Runnable(addr)
	// Not ready until the listener is up: the Service must not route to it.
	g.Expect(srvr.ReadyCheck(nil)).To(MatchError(errNotServing))
	le, ok := r.(manager.LeaderElectionRunnable)
	g.Expect(ok).To(BeTrue())
	g.Expect(le.NeedLeaderElection()).To(BeFalse())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	g.Eventually(func() (int, error) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}).Should(Equal(http.StatusOK))
	g.Expect(srvr.ReadyCheck(nil)).To(Succeed())
	// Oversized request headers are refused before any handler runs.
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
	g.Expect(err).NotTo(HaveOccurred())
	req.Header.Set("X-Big", strings.Repeat("a", 32<<10))
	resp, err := http.DefaultClient.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusRequestHeaderFieldsTooLarge))

	cancel()
	g.Eventually(done).WithTimeout(10 * time.Second).Should(Receive(BeNil()))
	g.Expect(srvr.ReadyCheck(nil)).To(MatchError(errNotServing))

	srv := newHTTPServer(http.NotFoundHandler())
	g.Expect(srv.ReadHeaderTimeout).To(Equal(5 * time.Second))
	g.Expect(srv.ReadTimeout).To(Equal(30 * time.Second))
	g.Expect(srv.WriteTimeout).To(Equal(60 * time.Second))
	g.Expect(srv.IdleTimeout).To(Equal(120 * time.Second))
	g.Expect(srv.MaxHeaderBytes).To(Equal(16 << 10))

	// A port already in use is an error, not a silent no-op.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	defer busy.Close()
	g.Expect(New(Config{}).Runnable(busy.Addr().String()).Start(context.Background())).NotTo(Succeed())
}

// A callback through a proxy that is not in --trusted-proxies (X-Forwarded-For
// from an untrusted peer) is reported in the log, once per interval; through
// a trusted one, or without the header, it is not.
func TestWarnUntrustedProxy(t *testing.T) {
	g := NewWithT(t)
	var lines []string
	now := time.Unix(1000, 0)
	s := New(Config{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Now:            func() time.Time { return now },
		Log:            funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}),
	})
	call := func(peer, xff string) {
		r := httptest.NewRequest(http.MethodGet, "/callback/ns/app/seg", nil) // no code: refused as malformed
		r.RemoteAddr = peer + ":4321"
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		s.Handler().ServeHTTP(httptest.NewRecorder(), r)
	}
	call("192.0.2.1", "")
	call("10.1.2.3", "198.51.100.7")
	g.Expect(lines).To(BeEmpty())
	call("192.0.2.1", "198.51.100.7")
	g.Expect(lines).To(HaveLen(1))
	g.Expect(lines[0]).To(ContainSubstring("--trusted-proxies"))
	g.Expect(lines[0]).To(ContainSubstring(`"peer"="192.0.2.1"`))
	call("192.0.2.1", "198.51.100.8")
	g.Expect(lines).To(HaveLen(1), "once per interval")
	now = now.Add(proxyWarnInterval)
	call("192.0.2.1", "198.51.100.9")
	g.Expect(lines).To(HaveLen(2))
}
