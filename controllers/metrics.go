package controllers

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/tokens"
)

// The business series of connections are per namespace (the connection's)
// and app (Kind/name of the app it uses, finch.ConnectionLabels), never per
// connection: their cardinality is bounded by the (namespace, app) pairs in
// use, times the values of their one other label. docs/metrics.md lists them.
var (
	connectionsByPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "finch_connections",
		Help: "FinchConnections by namespace, app and phase.",
	}, []string{"namespace", "app", "phase"})
	reauthOldestPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "finch_reauth_oldest_pending_timestamp_seconds",
		Help: "Unix time since which the longest-waiting FinchConnection of the namespace and app has needed the employer to re-authenticate (its ReauthRequired condition's lastTransitionTime); no series when none waits.",
	}, []string{"namespace", "app"})
	sessionsIssued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_sessions_issued_total",
		Help: "Connect sessions created or refreshed (kind Connect) and reauthentication sessions minted (kind Reauthenticate), by namespace and app.",
	}, []string{"namespace", "app", "kind"})
	sessionsExpired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_sessions_expired_total",
		Help: "Sessions that expired before the employer used them (employer drop-off), by namespace and app.",
	}, []string{"namespace", "app"})
	timeToConnect = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "finch_time_to_connect_seconds",
		Help:    "Time from the first Connect session to Finch reporting the connection connected, by namespace and app.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 12), // 1s .. ~49 days
	}, []string{"namespace", "app"})
	reauthsRequired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_reauth_required_total",
		Help: "Times a connection was found to need re-authentication, by namespace and app.",
	}, []string{"namespace", "app"})
)

func init() {
	metrics.Registry.MustRegister(connectionsByPhase, reauthOldestPending, sessionsIssued, sessionsExpired, timeToConnect, reauthsRequired)
}

// labels are the namespace and app label values of conn's business series.
func labels(conn *finchv1.FinchConnection) []string {
	ns, app := finch.ConnectionLabels(conn)
	return []string{ns, app}
}

func countSessionIssued(conn *finchv1.FinchConnection, kind finchv1.SessionKind) {
	sessionsIssued.WithLabelValues(append(labels(conn), string(kind))...).Inc()
}

func countSessionExpired(conn *finchv1.FinchConnection) {
	sessionsExpired.WithLabelValues(labels(conn)...).Inc()
}

func countReauthRequired(conn *finchv1.FinchConnection) {
	reauthsRequired.WithLabelValues(labels(conn)...).Inc()
}

func observeTimeToConnect(conn *finchv1.FinchConnection, d time.Duration) {
	timeToConnect.WithLabelValues(labels(conn)...).Observe(d.Seconds())
}

// initCounters exports the counters of a namespace and app at zero from its
// first connection on, so that increase() and rate() see its first event
// (a series born at 1 has no increase) and the dashboard shows 0, not "no
// data". The bound is the same: the pairs in use.
func initCounters(namespace, app string) {
	for _, k := range []finchv1.SessionKind{finchv1.SessionConnect, finchv1.SessionReauthenticate} {
		sessionsIssued.WithLabelValues(namespace, app, string(k))
	}
	sessionsExpired.WithLabelValues(namespace, app)
	reauthsRequired.WithLabelValues(namespace, app)
	timeToConnect.WithLabelValues(namespace, app)
	tokens.InitMetrics(namespace, app)
}

// reauthPendingSince is since when conn has waited for the employer to
// re-authenticate: the lastTransitionTime of its ReauthRequired condition
// while True (zero when it does not wait). It is the API server's record, so
// the gauge built from it is right after a restart or a leader change, and a
// new reason for the same wait (Finch's reauth, then a products change) keeps
// the time, as the condition keeps it.
func reauthPendingSince(conn *finchv1.FinchConnection) time.Time {
	c := meta.FindStatusCondition(conn.Status.Conditions, finchv1.ConditionReauthRequired)
	if c == nil || c.Status != metav1.ConditionTrue {
		return time.Time{}
	}
	return c.LastTransitionTime.Time
}

// connectionTracker keeps what the gauges say of every known connection, so
// that they are exact and forget deleted objects: finch_connections counts
// by (namespace, app, phase), and finch_reauth_oldest_pending_timestamp_seconds
// is the oldest wait for reauthentication per (namespace, app). A series is
// dropped when nothing is left in it, so a namespace emptied of connections
// leaves no series behind.
type connectionTracker struct {
	mu      sync.Mutex
	conns   map[types.NamespacedName]trackedConn
	counts  map[phaseKey]int
	pending map[pairKey]map[types.NamespacedName]time.Time // connections waiting for reauthentication
	seen    map[pairKey]bool                               // pairs whose counters are initialised
}

type trackedConn struct {
	pair         pairKey
	phase        finchv1.Phase
	reauthSince  time.Time
	reauthWaiter bool
}

type pairKey struct{ namespace, app string }

type phaseKey struct {
	pairKey
	phase finchv1.Phase
}

// set records conn as the status says it now is.
func (t *connectionTracker) set(conn *finchv1.FinchConnection) {
	key := types.NamespacedName{Namespace: conn.Namespace, Name: conn.Name}
	ns, app := finch.ConnectionLabels(conn)
	since := reauthPendingSince(conn)
	now := trackedConn{pair: pairKey{ns, app}, phase: conn.Status.Phase, reauthSince: since, reauthWaiter: !since.IsZero()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		t.conns = map[types.NamespacedName]trackedConn{}
		t.counts = map[phaseKey]int{}
		t.pending = map[pairKey]map[types.NamespacedName]time.Time{}
		t.seen = map[pairKey]bool{}
	}
	if !t.seen[now.pair] {
		t.seen[now.pair] = true
		initCounters(ns, app)
	}
	old, ok := t.conns[key]
	if ok && old == now {
		return
	}
	if ok {
		t.remove(key, old)
	}
	t.conns[key] = now
	t.add(key, now)
}

func (t *connectionTracker) forget(key types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.conns[key]; ok {
		t.remove(key, old)
		delete(t.conns, key)
	}
}

// add and remove change the series of one connection; the caller holds t.mu.
func (t *connectionTracker) add(key types.NamespacedName, c trackedConn) {
	t.count(phaseKey{c.pair, c.phase}, 1)
	if c.reauthWaiter {
		if t.pending[c.pair] == nil {
			t.pending[c.pair] = map[types.NamespacedName]time.Time{}
		}
		t.pending[c.pair][key] = c.reauthSince
		t.publishOldest(c.pair)
	}
}

func (t *connectionTracker) remove(key types.NamespacedName, c trackedConn) {
	t.count(phaseKey{c.pair, c.phase}, -1)
	if c.reauthWaiter {
		delete(t.pending[c.pair], key)
		t.publishOldest(c.pair)
	}
}

func (t *connectionTracker) count(k phaseKey, delta int) {
	t.counts[k] += delta
	if t.counts[k] <= 0 {
		delete(t.counts, k)
		connectionsByPhase.DeleteLabelValues(k.namespace, k.app, string(k.phase))
		return
	}
	connectionsByPhase.WithLabelValues(k.namespace, k.app, string(k.phase)).Set(float64(t.counts[k]))
}

// publishOldest sets the pair's oldest wait, or drops its series when none
// waits. The scan is over the connections waiting, not all of the pair's.
func (t *connectionTracker) publishOldest(p pairKey) {
	var oldest time.Time
	for _, since := range t.pending[p] {
		if oldest.IsZero() || since.Before(oldest) {
			oldest = since
		}
	}
	if len(t.pending[p]) == 0 {
		delete(t.pending, p)
		reauthOldestPending.DeleteLabelValues(p.namespace, p.app)
		return
	}
	reauthOldestPending.WithLabelValues(p.namespace, p.app).Set(float64(oldest.Unix()))
}
