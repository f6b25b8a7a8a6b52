package finch

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Label values are bounded: app is a FinchApp's namespace/name, endpoint one
// of the Endpoint* constants, code an HTTP status or "network_error". Never
// put tokens, secrets or customer identifiers in labels.
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_api_requests_total",
		Help: "HTTP requests sent to the Finch API, by app, endpoint and response code (or network_error).",
	}, []string{"app", "endpoint", "code"})

	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "finch_api_request_duration_seconds",
		Help:    "Latency of single Finch API request attempts, including reading the response body.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"app", "endpoint"})

	budgetWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "finch_api_budget_wait_seconds",
		Help:    "Time a Finch API request attempt waited for the client-side request budget.",
		Buckets: []float64{.001, .01, .1, .5, 1, 5, 10, 30, 60, 120, 300},
	}, []string{"app", "endpoint"})

	retriesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_api_retries_total",
		Help: "Finch API request retries, by reason (rate_limited, server_error, conflict, should_retry, network).",
	}, []string{"app", "endpoint", "reason"})

	// The calls refused during the per-IP penalty (budget.IPGuard, whose
	// pauses are finch_api_ip_penalty_until_seconds). They are not Finch
	// responses, so they are counted here and never in finch_api_requests_total.
	ipPenaltyRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_api_ip_penalty_refused_total",
		Help: "Finch API calls refused locally, without sending, while the operator serves Finch's per-IP rate-limit penalty.",
	}, []string{"app", "endpoint"})
)

func init() {
	metrics.Registry.MustRegister(requestsTotal, requestDuration, budgetWait, retriesTotal, ipPenaltyRefused)
}

// DeleteAppMetrics drops every series of app, for when its FinchApp is
// deleted, so that label cardinality stays bounded by the live apps.
func DeleteAppMetrics(app string) {
	l := prometheus.Labels{"app": app}
	requestsTotal.DeletePartialMatch(l)
	requestDuration.DeletePartialMatch(l)
	budgetWait.DeletePartialMatch(l)
	retriesTotal.DeletePartialMatch(l)
	ipPenaltyRefused.DeletePartialMatch(l)
}
