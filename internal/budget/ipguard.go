package budget

import (
	"fmt"
	"sync"
	"time"
)

// Finch's per-IP limit (developer.tryfinch.com
// /api-reference/development-guides/Rate-Limits, "IP Address Rate Limits";
// docs/finch-api.md): 1,000 requests per 5 minutes from one IP address, then a 60-minute penalty
// answered with 429 rate_limit_exceeded_error / finch_api_ip_rl. Every app the
// operator serves leaves through the same egress IP, so this limit covers
// every app that calls the same Finch API host, unlike the per-app Budget.
var DefaultIP = Config{Requests: 1000, Window: 5 * time.Minute}

// MaxIPPenalty is Finch's documented per-IP penalty (same page: 60 minutes).
// A finch_api_ip_rl answer never pauses a guard for longer, whatever its
// Retry-After says: a server that is not Finch, or a proxy, must not stop
// the operator's calls for a day.
const MaxIPPenalty = 60 * time.Minute

// DefaultIPPenalty is how long the guard pauses after a finch_api_ip_rl answer
// without Retry-After (Finch documents no Retry-After header).
const DefaultIPPenalty = MaxIPPenalty

// ipBudgetKey is the guard budget's single key: the per-IP limit counts every
// endpoint together.
const ipBudgetKey = "*"

// IPGuard keeps the operator inside Finch's per-IP limit at one API host.
// Share one IPGuard between the Gates of every app that calls that host
// (IPGuards hands them out per host): each attempt of each of them takes a
// slot from the guard's Budget as well as from its app's, and once any of
// them is answered 429 finch_api_ip_rl, all of them stop sending until the
// penalty is over (see PausedUntil). Calls made during the pause are refused
// at once with a *PenaltyError (the Finch client turns it into its local 429
// finch_api_ip_rl error), because a request sent while penalized is wasted
// and may prolong the penalty. Only answers from the guard's own host reach
// it, so an app pointed at another host cannot pause the apps that call Finch.
type IPGuard struct {
	budget *Budget
	host   string           // the host key (IPGuards.For): finch_api_ip_penalty_until_timestamp_seconds's label
	now    func() time.Time // the penalty clock; tests replace it

	mu    sync.Mutex
	until time.Time   // end of the penalty; zero when none was seen
	timer *time.Timer // resets the gauge when the penalty ends
}

// NewIPGuard returns a guard whose Budget allows cfg.Requests per cfg.Window
// across all endpoints and apps. Non-positive fields take their value from
// DefaultIP (Finch's documented figures).
func NewIPGuard(cfg Config) *IPGuard {
	if cfg.Requests <= 0 {
		cfg.Requests = DefaultIP.Requests
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultIP.Window
	}
	return &IPGuard{budget: New(cfg), now: time.Now}
}

// WithClock makes g read the time from now instead of time.Now, for tests
// that step through a penalty; call it before g is shared. It returns g.
func (g *IPGuard) WithClock(now func() time.Time) *IPGuard {
	g.now = now
	return g
}

// Host is the guard's host key (IPGuards.For; "" for a guard made by NewIPGuard).
func (g *IPGuard) Host() string { return g.host }

// Budget is the guard's operator-wide budget (one key for every endpoint), for
// SetConfig and inspection.
func (g *IPGuard) Budget() *Budget { return g.budget }

// PausedUntil is when the current per-IP penalty ends, or the zero time when
// the guard is not paused.
func (g *IPGuard) PausedUntil() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.expireLocked() {
		return time.Time{}
	}
	return g.until
}

// Delay is how long a call would wait before it could be sent if it were made
// now: the rest of the penalty, or else the wait for the guard's budget (which
// does not include the app's own Budget.Delay). Callers with other work to do
// use it to come back later instead of blocking.
func (g *IPGuard) Delay() time.Duration {
	if d := g.remaining(); d > 0 {
		return d
	}
	return g.budget.Delay(ipBudgetKey)
}

func (g *IPGuard) remaining() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.expireLocked() {
		return 0
	}
	return g.until.Sub(g.now())
}

// expireLocked ends a penalty whose time is up (resetting the gauge) and
// reports whether the guard is unpaused.
func (g *IPGuard) expireLocked() bool {
	if g.until.IsZero() {
		return true
	}
	if g.now().Before(g.until) {
		return false
	}
	g.until = time.Time{}
	ipPenaltyUntil.WithLabelValues(g.host).Set(0)
	return true
}

// penalize records a finch_api_ip_rl answer: pause until Retry-After if Finch
// gave one, else for DefaultIPPenalty, and never beyond MaxIPPenalty. A pause
// is only ever extended: a shorter Retry-After seen later does not cut an
// earlier, longer one.
func (g *IPGuard) penalize(retryAfter time.Duration) {
	d := min(retryAfter, MaxIPPenalty)
	if d <= 0 {
		d = DefaultIPPenalty
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	until := g.now().Add(d)
	if !until.After(g.until) {
		return
	}
	g.until = until
	ipPenaltyUntil.WithLabelValues(g.host).Set(float64(until.UnixMilli()) / 1e3)
	if g.timer != nil {
		g.timer.Stop()
	}
	g.timer = time.AfterFunc(d, g.expire)
}

// expire resets the penalty gauge once the pause is over, even if no call
// comes to notice.
func (g *IPGuard) expire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked()
}

// PenaltyError refuses a call made while an IPGuard serves Finch's per-IP
// penalty: nothing was sent. The Finch client answers it as Finch would have
// (429 rate_limit_exceeded_error / finch_api_ip_rl, marked local).
type PenaltyError struct {
	Host  string        // the guard's host key ("" for a guard made by NewIPGuard)
	Until time.Time     // end of the penalty
	Left  time.Duration // Until minus now, when refused
}

func (e *PenaltyError) Error() string {
	host := ""
	if e.Host != "" {
		host = " at " + e.Host
	}
	return fmt.Sprintf("not sent: the operator is serving Finch's per-IP rate-limit penalty (finch_api_ip_rl)%s until %s; retry after %s",
		host, e.Until.UTC().Format(time.RFC3339), e.Left.Round(time.Second))
}

// refuse returns the refusal of a call made during the pause, or nil.
func (g *IPGuard) refuse() *PenaltyError {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.expireLocked() {
		return nil
	}
	return &PenaltyError{Host: g.host, Until: g.until, Left: g.until.Sub(g.now())}
}

// MaxIPGuards bounds the guards an IPGuards holds. Only the hosts of
// --finch-api-hosts get a guard, so the default list needs two (http and
// https); the bound matters only for host:* entries, whose every port gets
// its own.
const MaxIPGuards = 1024

// ErrTooManyHosts is returned by IPGuards.For once MaxIPGuards hosts have a
// guard.
var ErrTooManyHosts = fmt.Errorf("the operator already keeps Finch's per-IP limit for %d API hosts", MaxIPGuards)

// IPGuards holds one IPGuard per Finch API host (scheme, host and port of
// an app's apiURL: the Finch client's HostKey), each made on first use with
// the same budget. Finch counts
// its per-IP limit per service, so apps calling the same host share a guard,
// and a 429 finch_api_ip_rl from one host pauses only the apps calling it.
type IPGuards struct {
	cfg    Config
	mu     sync.Mutex
	guards map[string]*IPGuard
}

// NewIPGuards returns a set whose guards allow cfg.Requests per cfg.Window
// each (non-positive fields: DefaultIP's).
func NewIPGuards(cfg Config) *IPGuards {
	return &IPGuards{cfg: cfg, guards: map[string]*IPGuard{}}
}

// For returns the guard of the API host key (scheme://host:port, as the
// Finch client's HostKey spells it), making it on first use. It fails with
// ErrTooManyHosts once MaxIPGuards hosts have a guard.
func (s *IPGuards) For(key string) (*IPGuard, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.guards[key]; g != nil {
		return g, nil
	}
	if len(s.guards) >= MaxIPGuards {
		return nil, ErrTooManyHosts
	}
	g := NewIPGuard(s.cfg)
	g.host = key
	s.guards[key] = g
	ipPenaltyUntil.WithLabelValues(key).Set(0) // the host's series exists from its first app on
	return g, nil
}
