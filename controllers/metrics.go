package controllers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

var (
	// connection_namespace (bounded by the namespaces that hold connections,
	// like the app label of finch_api_*) makes the funnel per tenant; it is not
	// "namespace", which Prometheus's target labels would rename.
	connectionsByPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "finchconnection_phase",
		Help: "FinchConnections by namespace (connection_namespace) and phase.",
	}, []string{"connection_namespace", "phase"})
	sessionsIssued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finchconnection_sessions_issued_total",
		Help: "Connect sessions created or refreshed (kind Connect) and reauthentication sessions minted (kind Reauthenticate).",
	}, []string{"kind"})
	sessionsExpired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "finchconnection_sessions_expired_total",
		Help: "Sessions that expired before the employer used them (employer drop-off).",
	})
	timeToConnect = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "finchconnection_time_to_connect_seconds",
		Help:    "Time from the first Connect session to Finch reporting the connection connected.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 12), // 1s .. ~49 days
	})
	reauthsRequired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "finchconnection_reauth_required_total",
		Help: "Times a connection was found to need re-authentication.",
	})
)

func init() {
	metrics.Registry.MustRegister(connectionsByPhase, sessionsIssued, sessionsExpired, timeToConnect, reauthsRequired)
}

// phaseTracker keeps the phase of every known connection so the phase gauge
// is exact and forgets deleted objects. A (namespace, phase) series is
// dropped when its count reaches zero, so a namespace emptied of connections
// leaves no series behind.
type phaseTracker struct {
	mu     sync.Mutex
	phases map[types.NamespacedName]finchv1.Phase
	counts map[phaseKey]int
}

type phaseKey struct {
	namespace string
	phase     finchv1.Phase
}

func (t *phaseTracker) set(key types.NamespacedName, p finchv1.Phase) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.phases == nil {
		t.phases = map[types.NamespacedName]finchv1.Phase{}
		t.counts = map[phaseKey]int{}
	}
	old, ok := t.phases[key]
	if ok && old == p {
		return
	}
	if ok {
		t.add(key.Namespace, old, -1)
	}
	t.phases[key] = p
	t.add(key.Namespace, p, 1)
}

func (t *phaseTracker) forget(key types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.phases[key]; ok {
		t.add(key.Namespace, old, -1)
		delete(t.phases, key)
	}
}

// add changes one series by delta; the caller holds t.mu.
func (t *phaseTracker) add(namespace string, p finchv1.Phase, delta int) {
	k := phaseKey{namespace, p}
	t.counts[k] += delta
	if t.counts[k] <= 0 {
		delete(t.counts, k)
		connectionsByPhase.DeleteLabelValues(namespace, string(p))
		return
	}
	connectionsByPhase.WithLabelValues(namespace, string(p)).Set(float64(t.counts[k]))
}
