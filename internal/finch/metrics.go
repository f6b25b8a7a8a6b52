package finch

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// Label values are bounded: namespace and app name an app object (AppLabels),
// endpoint is one of the Endpoint* constants, code an HTTP status or
// "network_error". Never put tokens, secrets or customer identifiers in
// labels. docs/metrics.md lists every metric of the operator.
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_api_requests_total",
		Help: "HTTP requests sent to the Finch API, by app, endpoint and response code (or network_error).",
	}, []string{"namespace", "app", "endpoint", "code"})

	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "finch_api_request_duration_seconds",
		Help:    "Latency of single Finch API request attempts, including reading the response body.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"namespace", "app", "endpoint"})

	budgetWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "finch_api_budget_wait_seconds",
		Help:    "Time a Finch API request attempt waited for the client-side request budget.",
		Buckets: []float64{.001, .01, .1, .5, 1, 5, 10, 30, 60, 120, 300},
	}, []string{"namespace", "app", "endpoint"})

	retriesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_api_retries_total",
		Help: "Finch API request retries, by reason (rate_limited, server_error, conflict, should_retry, network).",
	}, []string{"namespace", "app", "endpoint", "reason"})

	// The calls refused during the per-IP penalty (budget.IPGuard, whose
	// pauses are finch_api_ip_penalty_until_timestamp_seconds). They are not
	// Finch responses, so they are counted here and never in
	// finch_api_requests_total.
	ipPenaltyRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_api_ip_penalty_refused_total",
		Help: "Finch API calls refused locally, without sending, while the operator serves Finch's per-IP rate-limit penalty.",
	}, []string{"namespace", "app", "endpoint"})
)

func init() {
	metrics.Registry.MustRegister(requestsTotal, requestDuration, budgetWait, retriesTotal, ipPenaltyRefused)
}

// AppLabels are the values of the "namespace" and "app" labels for the app
// object key (a ClusterFinchApp's has no namespace): the app label is
// Kind/name (FinchApp/acme, ClusterFinchApp/shared), like kubectl's
// resource/name, so a FinchApp and a ClusterFinchApp of the same name stay
// apart in one label. Business series of a connection take the connection's
// namespace instead (ConnectionLabels).
func AppLabels(key types.NamespacedName) (namespace, app string) {
	if key.Namespace == "" {
		return "", finchv1.ClusterFinchAppKind + "/" + key.Name
	}
	return key.Namespace, finchv1.FinchAppKind + "/" + key.Name
}

// ConnectionLabels are the "namespace" and "app" label values of the
// business series of a connection: its own namespace and the app it uses.
// Per app and namespace, never per connection, so the cardinality is
// bounded by the (namespace, app) pairs in use.
func ConnectionLabels(conn *finchv1.FinchConnection) (namespace, app string) {
	return conn.Namespace, conn.AppKind() + "/" + conn.AppName()
}

// DeleteAppMetrics drops every series of an app object, for when it is
// deleted, so that label cardinality stays bounded by the live apps.
func DeleteAppMetrics(key types.NamespacedName) {
	ns, app := AppLabels(key)
	l := prometheus.Labels{"namespace": ns, "app": app}
	requestsTotal.DeletePartialMatch(l)
	requestDuration.DeletePartialMatch(l)
	budgetWait.DeletePartialMatch(l)
	retriesTotal.DeletePartialMatch(l)
	ipPenaltyRefused.DeletePartialMatch(l)
}
