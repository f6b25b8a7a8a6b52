package inbound

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// Callback results (label "result" of finch_inbound_callbacks_total).
const (
	callbackConnected        = "connected"         // token stored for a FinchConnection
	callbackUnmatched        = "unmatched"         // valid code, but no FinchConnection for its customer
	callbackInvalid          = "invalid"           // bad parameters, unknown or unusable app
	callbackCodeRejected     = "code_rejected"     // Finch rejected the code (used, expired) or the request
	callbackFinchUnavailable = "finch_unavailable" // Finch 5xx, 429 beyond the retry budget, network
	callbackStoreFailed      = "store_failed"      // the token could not be written to its Secret
	callbackError            = "error"             // the Kubernetes API failed before the code was spent
)

// Reasons a callback is refused before any Finch call (label "reason" of
// finch_inbound_callback_rejected_total).
const (
	rejectIPRate           = "ip_rate_limited"   // the client address sent too many callbacks
	rejectAppRate          = "app_rate_limited"  // too many unverifiable callbacks for the app
	rejectMalformed        = "malformed"         // wrong method, path or parameters
	rejectUnknownApp       = "unknown_app"       // no such FinchApp, or it is not usable
	rejectBadPath          = "bad_path"          // the app's secret path segment is wrong
	rejectBadState         = "bad_state"         // state missing or not signed by the operator
	rejectExpiredState     = "expired_state"     // a signed state past its session's expiry
	rejectNoSession        = "no_session"        // no FinchConnection publishes that session, or it expired
	rejectSessionCompleted = "session_completed" // the session's code was already exchanged
	rejectSessionLocked    = "session_locked"    // too many rejected codes for the session
)

// Callback exchange results (label "result" of finch_inbound_callback_exchanges_total).
const (
	exchangeSpent   = "exchanged" // Finch returned a token
	exchangeCeiling = "ceiling"   // refused: the app's callback exchange ceiling is reached
)

// Webhook results (label "result" of finch_inbound_webhooks_total).
const (
	webhookAccepted          = "accepted"
	webhookDuplicate         = "duplicate"
	webhookUnauthorized      = "unauthorized"
	webhookTooLarge          = "too_large"
	webhookBadRequest        = "bad_request"
	webhookUnknownConnection = "unknown_connection"
	webhookIgnoredEventType  = "ignored_event_type"
	webhookQueueFull         = "queue_full" // answered 503: the queue of events to record is full
	webhookError             = "error"
)

// Route labels of finch_inbound_request_duration_seconds.
const (
	routeCallback = "callback"
	routeWebhook  = "webhook"
	routeHealthz  = "healthz"
	routeOther    = "other"
)

// Business series carry "namespace" and "app" (metricLabels): the app object
// as Kind/name, and the namespace of the FinchApp or, for a ClusterFinchApp,
// of the connection once a verified state names it. Both are "" until the
// request names an app that exists: a path names arbitrary text, so only
// existing apps (and namespaces) ever become label values. Never a customer,
// connection, session or code.
var (
	callbacksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_inbound_callbacks_total",
		Help: "Redirect-flow callbacks by namespace, app and result (connected, unmatched, invalid, code_rejected, finch_unavailable, store_failed, error).",
	}, []string{"namespace", "app", "result"})
	webhooksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_inbound_webhooks_total",
		Help: "Finch webhook deliveries by namespace, app and result (accepted, duplicate, unauthorized, too_large, bad_request, unknown_connection, ignored_event_type, queue_full, error).",
	}, []string{"namespace", "app", "result"})
	webhookQueueDepth = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "finch_inbound_webhook_queue_depth",
		Help: "Verified webhook events answered 2xx and not yet recorded on their FinchConnection (queued or being written).",
	})
	callbackRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_inbound_callback_rejected_total",
		Help: "Callbacks refused before any Finch call, by namespace, app and reason (ip_rate_limited, app_rate_limited, malformed, unknown_app, bad_path, bad_state, expired_state, no_session, session_completed, session_locked).",
	}, []string{"namespace", "app", "reason"})
	callbackExchanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "finch_inbound_callback_exchanges_total",
		Help: "Authorization code exchanges the callback attempted at Finch (POST /auth/token), by namespace, app and result (exchanged, code_rejected, finch_unavailable, ceiling).",
	}, []string{"namespace", "app", "result"})
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "finch_inbound_request_duration_seconds",
		Help:    "Time to answer an inbound request, by route (callback, webhook, healthz, other).",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"route"})
)

// metricLabels are the namespace and app label values for a request about
// app (nil: no existing app) and, for a ClusterFinchApp, the namespace of the
// connection it concerns ("" when not known).
func metricLabels(app finchv1.AppObject, connNamespace string) (namespace, name string) {
	if app == nil {
		return "", ""
	}
	namespace, name = finch.AppLabels(finchv1.AppKeyOf(app))
	if namespace == "" {
		namespace = connNamespace
	}
	return namespace, name
}

func countCallback(app finchv1.AppObject, connNamespace, result string) {
	ns, name := metricLabels(app, connNamespace)
	callbacksTotal.WithLabelValues(ns, name, result).Inc()
}

func countRejected(app finchv1.AppObject, connNamespace, reason string) {
	ns, name := metricLabels(app, connNamespace)
	callbackRejected.WithLabelValues(ns, name, reason).Inc()
}

func countExchange(app finchv1.AppObject, connNamespace, result string) {
	ns, name := metricLabels(app, connNamespace)
	callbackExchanges.WithLabelValues(ns, name, result).Inc()
}

func init() {
	metrics.Registry.MustRegister(callbacksTotal, webhooksTotal, requestDuration, callbackRejected, callbackExchanges, webhookQueueDepth)
	for _, r := range []string{rejectIPRate, rejectAppRate, rejectMalformed, rejectUnknownApp, rejectBadPath,
		rejectBadState, rejectExpiredState, rejectNoSession, rejectSessionCompleted, rejectSessionLocked} {
		callbackRejected.WithLabelValues("", "", r)
	}
	// Export every result from the start (for requests that name no app), so
	// rate() and alerts work before the first event.
	for _, r := range []string{callbackConnected, callbackUnmatched, callbackInvalid, callbackCodeRejected,
		callbackFinchUnavailable, callbackStoreFailed, callbackError} {
		callbacksTotal.WithLabelValues("", "", r)
	}
	for _, r := range []string{webhookAccepted, webhookDuplicate, webhookUnauthorized, webhookTooLarge,
		webhookBadRequest, webhookUnknownConnection, webhookIgnoredEventType, webhookQueueFull, webhookError} {
		webhooksTotal.WithLabelValues("", "", r)
	}
}
