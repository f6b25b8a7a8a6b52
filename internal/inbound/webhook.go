package inbound

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/index"
	"github.com/connectops/finch-operator/internal/tokens"
)

const (
	// maxEventIDLen bounds Finch-Event-Id (it becomes an annotation value and
	// a dedup key); Finch's ids look like msg_<27 characters>.
	maxEventIDLen = 256
	// maxStatusLen bounds data.status written to an annotation.
	maxStatusLen = 256
)

// Fixed webhook answers: nothing in them depends on what exists.
var webhookBodies = map[int][]byte{
	http.StatusOK:                    []byte(`{"status":"ok"}` + "\n"),
	http.StatusBadRequest:            []byte(`{"status":"bad_request"}` + "\n"),
	http.StatusUnauthorized:          []byte(`{"status":"unauthorized"}` + "\n"),
	http.StatusRequestEntityTooLarge: []byte(`{"status":"too_large"}` + "\n"),
	http.StatusInternalServerError:   []byte(`{"status":"error"}` + "\n"),
	http.StatusServiceUnavailable:    []byte(`{"status":"busy"}` + "\n"),
}

func writeWebhookAnswer(w http.ResponseWriter, status int) {
	body := webhookBodies[status]
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// handleWebhook receives Finch webhooks. It verifies and deduplicates the
// delivery and, for account.updated, queues it for the workers that record
// it on the FinchConnection (a merge patch of two annotations) for the
// controller to act on. It never calls Finch and never waits for the API
// server, so it answers fast even during a storm.
func (s *Server) handleWebhook(w http.ResponseWriter, r *http.Request) {
	var app finchv1.AppObject
	status, result := s.webhook(w, r, &app)
	// Labelled with the app only once it is known to exist (a ClusterFinchApp's
	// with no namespace: one delivery may concern several).
	ns, name := metricLabels(app, "")
	webhooksTotal.WithLabelValues(ns, name, result).Inc()
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int(queueFullRetryAfter.Seconds())))
	}
	writeWebhookAnswer(w, status)
}

// webhook handles a delivery and sets *found to the app its path names once
// that app is known to exist.
func (s *Server) webhook(w http.ResponseWriter, r *http.Request, found *finchv1.AppObject) (int, string) {
	key, validPath := pathApp(r)
	log := s.log
	if validPath { // anything else is arbitrary request text: keep it out of the log
		log = log.WithValues("webhook", apps.KeyString(key))
	}

	// Until the FinchApp is known to exist, rejections share one log budget
	// (scope ""): made-up app names must not each get their own.
	if r.ContentLength > s.cfg.MaxBodyBytes {
		s.logRejected(log, "", "body too large", "contentLength", r.ContentLength)
		return http.StatusRequestEntityTooLarge, webhookTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.logRejected(log, "", "body too large")
			return http.StatusRequestEntityTooLarge, webhookTooLarge
		}
		s.logRejected(log, "", "body unreadable")
		return http.StatusBadRequest, webhookBadRequest
	}

	// No app, no webhook secret, bad signature: all the same 401.
	if !validPath {
		s.logRejected(log, "", "path is not a namespace and FinchApp name")
		return http.StatusUnauthorized, webhookUnauthorized
	}
	// Detached from the request: the reads below are from the cache (or, for
	// an app not resolved yet, its Secrets) and must not be cut short.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), apiTimeout)
	defer cancel()
	// An app in a namespace the operator does not watch (or a cluster app
	// in a namespace-scoped install) is not found, without a read.
	app, err := s.getApp(ctx, key)
	if err != nil {
		if apierrors.IsNotFound(err) {
			s.logRejected(log, "", "no such app")
			return http.StatusUnauthorized, webhookUnauthorized
		}
		log.Error(err, "webhook: cannot read the app")
		return http.StatusInternalServerError, webhookError
	}
	*found = app
	scope := apps.KeyString(key) // the app exists: its rejections get their own budget
	// An app that does not resolve (its Secrets missing) is remembered until
	// it changes: unsigned deliveries for it cost no API read each.
	resolved, err := s.resolver.get(ctx, app)
	if err != nil {
		var cfgErr *apps.ConfigError
		if errors.As(err, &cfgErr) {
			s.logRejected(log, scope, "FinchApp not usable", "appReason", cfgErr.Reason)
			return http.StatusUnauthorized, webhookUnauthorized
		}
		log.Error(err, "webhook: cannot resolve the FinchApp")
		return http.StatusInternalServerError, webhookError
	}
	if resolved.WebhookSecret == "" {
		s.logRejected(log, scope, "FinchApp has no webhookSecretRef")
		return http.StatusUnauthorized, webhookUnauthorized
	}
	if err := finch.Verify(body, r.Header, resolved.WebhookSecret, s.cfg.Now()); err != nil {
		if errors.Is(err, finch.ErrInvalidSecret) {
			// An operator's mistake, not the sender's: error level, still limited.
			if l, ok := s.rejectLog(log, scope, "webhook secret is not valid base64"); ok {
				l.Error(err, "webhook rejected")
			}
		} else {
			s.logRejected(log, scope, verifyReason(err))
		}
		return http.StatusUnauthorized, webhookUnauthorized
	}

	// Verified: from here on the delivery comes from Finch.
	eventID := finch.FirstHeader(r.Header, finch.HeaderEventID)
	if len(eventID) > maxEventIDLen {
		s.logRejected(log, scope, "Finch-Event-Id too long", "length", len(eventID))
		return http.StatusBadRequest, webhookBadRequest
	}
	log = log.WithValues("eventID", eventID)
	dedupKey := key.String() + "\x00" + eventID
	if s.seen.Contains(dedupKey) {
		log.V(1).Info("webhook: duplicate delivery ignored")
		return http.StatusOK, webhookDuplicate
	}
	ev, err := finch.ParseEvent(body)
	if err != nil {
		s.logRejected(log, scope, "body is not a JSON object")
		return http.StatusBadRequest, webhookBadRequest
	}
	ev.EventID = eventID
	log = log.WithValues("eventType", ev.EventType, "connectionID", ev.ConnectionID)
	if ev.ConnectionID == "" {
		log = log.WithValues("companyID", ev.CompanyID, "accountID", ev.AccountID)
	}

	var status int
	var result string
	switch kind := finch.InitialSyncKind(ev.EventType); {
	case ev.EventType == finch.EventAccountUpdated:
		status, result = s.accountUpdated(ctx, log, key, ev)
	case kind != "":
		status, result = s.initialSync(ctx, log, key, ev, kind)
	default:
		log.V(1).Info("webhook: event type not acted on")
		status, result = http.StatusOK, webhookIgnoredEventType
	}
	if status == http.StatusOK {
		// Answered 2xx: Finch will not send it again, so a replay is a duplicate.
		s.seen.Add(dedupKey, struct{}{})
	}
	return status, result
}

// accountUpdated queues an account.updated for the connections it names:
// the status it reports becomes an annotation the controller acts on.
func (s *Server) accountUpdated(ctx context.Context, log logr.Logger, key types.NamespacedName, ev *finch.WebhookEvent) (int, string) {
	list, err := s.webhookTargets(ctx, key, ev)
	if err != nil {
		log.Error(err, "webhook: cannot list FinchConnections")
		return http.StatusInternalServerError, webhookError
	}
	status := ev.Data.Status
	if len(status) > maxStatusLen {
		status = status[:maxStatusLen]
	}
	if ev.ConnectionID == "" && len(list.Items) > 1 {
		// A company_id or account_id shared by several connections does not
		// say which one Finch meant: record no status, so each controller
		// introspects (one call) instead of minting a reauth session for all.
		status = ""
	}
	var recs []*webhookRecord
	already := 0
	for i := range list.Items {
		conn := &list.Items[i]
		if !conn.DeletionTimestamp.IsZero() {
			continue
		}
		if conn.Annotations[finchv1.WebhookEventAnnotation] == ev.EventID {
			already++ // recorded by another replica (or before a restart)
			continue
		}
		recs = append(recs, &webhookRecord{conn: client.ObjectKeyFromObject(conn), kind: recordAccountStatus, eventID: ev.EventID, status: status})
	}
	switch {
	case len(recs) > 0:
		return s.enqueue(log, recs)
	case already > 0:
		return http.StatusOK, webhookDuplicate
	case ev.ConnectionID == "":
		// Verified, so from Finch: worth seeing why it was not acted on.
		log.Info("webhook: no FinchConnection has this company_id or account_id")
		return http.StatusOK, webhookUnknownConnection
	default:
		log.V(1).Info("webhook: no FinchConnection has this connection")
		return http.StatusOK, webhookUnknownConnection
	}
}

// enqueue hands verified records to the workers; Finch is answered 2xx once
// they are queued, 503 (and retries) when the queue is full or closing.
func (s *Server) enqueue(log logr.Logger, recs []*webhookRecord) (int, string) {
	switch err := s.webhooks.add(recs); {
	case err == nil:
		log.V(1).Info("webhook queued", "connections", len(recs))
		return http.StatusOK, webhookAccepted
	case errors.Is(err, errQueueFull):
		if l, ok := s.rejectLog(log, "", "queue full"); ok {
			l.Info("webhook answered 503: the queue of events to record is full; Finch retries it", "queueSize", s.cfg.WebhookQueueSize)
		}
		return http.StatusServiceUnavailable, webhookQueueFull
	default:
		return http.StatusServiceUnavailable, webhookQueueFull
	}
}

// Kinds of webhookRecord.
const (
	// recordAccountStatus: the event ID and the connection status an
	// account.updated reported (tokens.RecordWebhook).
	recordAccountStatus = "account-status"
	// recordInitialSync: an initial data sync Finch reported; the record's
	// kind is this plus "/" and its status, the sync's kind
	// (finch.SyncOrganization or finch.SyncPayroll), so the two never coalesce.
	recordInitialSync = "initial-sync"
)

// recordEvent writes one queued event on its FinchConnection; the queue's
// workers call it. It is the one place a verified event reaches the API
// server: a new kind of event adds its case here.
func (s *Server) recordEvent(ctx context.Context, rec *webhookRecord) error {
	conn := &finchv1.FinchConnection{}
	conn.Namespace, conn.Name = rec.conn.Namespace, rec.conn.Name
	switch rec.kind {
	case recordAccountStatus:
		return tokens.RecordWebhook(ctx, s.cfg.Client, conn, rec.eventID, rec.status)
	case recordInitialSync + "/" + rec.status:
		return s.writeInitialSync(ctx, conn, rec)
	default:
		return fmt.Errorf("unknown webhook record kind %q", rec.kind)
	}
}

// webhookTargets lists the app's FinchConnections an account.updated is about.
//
// finch-api-go webhook.go (BaseWebhookEvent, at e10c5c0) has connection_id
// without api:"required", while account_id (deprecated) and company_id are
// required: an event may identify its connection only by those. So use
// connection_id when present and nothing else (it is stable and exact);
// without it, company_id, then account_id. Finch's connection_id migration
// guide says both may change when the employer re-authenticates, so status
// (set at token exchange and introspection) may hold older ones: a miss is
// possible, and is acknowledged like an unknown connection.
func (s *Server) webhookTargets(ctx context.Context, app types.NamespacedName, ev *finch.WebhookEvent) (*finchv1.FinchConnectionList, error) {
	type lookup struct{ index, value string }
	lookups := []lookup{{index.ConnectionID, ev.ConnectionID}}
	if ev.ConnectionID == "" {
		lookups = []lookup{
			{index.ConnectionCompanyID, ev.CompanyID},
			{index.ConnectionAccountID, ev.AccountID},
		}
	}
	list := &finchv1.FinchConnectionList{}
	for _, l := range lookups {
		if l.value == "" {
			continue
		}
		if err := s.cfg.Client.List(ctx, list, index.ForAppValue(app, l.index, l.value)...); err != nil {
			return nil, err
		}
		if len(list.Items) > 0 {
			break
		}
	}
	return list, nil
}

// rejectLog decides whether a rejected delivery is logged: the first few per
// scope and reason, then one per 30 s (the Server's eventLimiter), because
// anyone can post forged deliveries. The logger it returns carries the reason
// and how many similar rejections were not logged since the last line.
// Callers never add the secret, a signature or the body.
func (s *Server) rejectLog(log logr.Logger, scope, reason string) (logr.Logger, bool) {
	// The Server's address keeps counts of Servers sharing the process apart.
	key := fmt.Sprintf("webhook-rejected\x00%p\x00%s\x00%s", s, scope, reason)
	if !s.limiter.Allow(key) {
		rejectSuppressed.add(key)
		return log, false
	}
	log = log.WithValues("reason", reason)
	if n := rejectSuppressed.take(key); n > 0 {
		log = log.WithValues("suppressed", n)
	}
	return log, true
}

// logRejected logs a rejected delivery at info level (at V(1) a wrong secret
// or webhook URL went unnoticed), rate-limited by rejectLog.
func (s *Server) logRejected(log logr.Logger, scope, reason string, kv ...any) {
	if l, ok := s.rejectLog(log, scope, reason); ok {
		l.Info("webhook rejected", kv...)
	}
}

// verifyReason names a verification failure with a fixed string: it is a
// rate-limit key, so it must not carry request text.
func verifyReason(err error) string {
	switch {
	case errors.Is(err, finch.ErrMissingHeaders):
		return "missing Finch headers"
	case errors.Is(err, finch.ErrInvalidTimestamp):
		return "Finch-Timestamp not an integer"
	case errors.Is(err, finch.ErrTimestampTooOld):
		return "timestamp too old"
	case errors.Is(err, finch.ErrTimestampTooNew):
		return "timestamp too new"
	case errors.Is(err, finch.ErrNoMatchingSignature):
		return "no matching signature"
	default:
		return "verification failed"
	}
}

// suppressedCounts counts, per rate-limit key, the rejections not logged
// since the last line; bounded like the limiter's buckets. It is process-wide
// only because Server has no field for it: the keys name the Server.
type suppressedCounts struct {
	mu     sync.Mutex
	counts *lru[int]
}

var rejectSuppressed = &suppressedCounts{counts: newLRU[int](4096, 0, time.Now)}

func (c *suppressedCounts) add(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, _ := c.counts.Get(key)
	c.counts.Add(key, n+1)
}

// take returns the count and resets it.
func (c *suppressedCounts) take(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.counts.Get(key)
	if ok && n > 0 {
		c.counts.Add(key, 0)
	}
	return n
}
