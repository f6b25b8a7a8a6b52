package inbound

// Internals for the external tests (package inbound_test), which need the
// operator's wiring (internal/operator imports this package).

// The bodies of the callback's fixed pages.
var (
	PageConnected        = string(pageConnected.body)
	PageInvalid          = string(pageInvalid.body)
	PageExpired          = string(pageExpired.body)
	PageFinchUnavailable = string(pageFinchUnavailable.body)
	PageContactAdmin     = string(pageContactAdmin.body)
)

// AllPageBodies are the bodies of every fixed page; WebhookBodies the
// webhook's fixed answers by status.
var (
	AllPageBodies = func() [][]byte {
		out := make([][]byte, len(allPages))
		for i, p := range allPages {
			out[i] = p.body
		}
		return out
	}()
	WebhookBodies = webhookBodies
)

// Metrics and their labels.
var (
	CallbacksTotal    = callbacksTotal
	WebhooksTotal     = webhooksTotal
	RequestDuration   = requestDuration
	CallbackRejected  = callbackRejected
	WebhookQueueDepth = webhookQueueDepth
)

const (
	CallbackInvalid          = callbackInvalid
	CallbackConnected        = callbackConnected
	CallbackCodeRejected     = callbackCodeRejected
	CallbackStoreFailed      = callbackStoreFailed
	WebhookAccepted          = webhookAccepted
	WebhookDuplicate         = webhookDuplicate
	WebhookUnauthorized      = webhookUnauthorized
	WebhookBadRequest        = webhookBadRequest
	WebhookUnknownConnection = webhookUnknownConnection
	WebhookIgnoredEventType  = webhookIgnoredEventType
	WebhookQueueFull         = webhookQueueFull
	RejectExpiredState       = rejectExpiredState
	RejectIPRate             = rejectIPRate
	RouteWebhook             = routeWebhook
	MaxSessionExchanges      = maxSessionExchanges
)
