package inbound

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/controllers"
	"github.com/connectops/finch-operator/internal/finch"
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
// delivery and, for account.updated, records it on the FinchConnection
// (a merge patch of two annotations) for the controller to act on. It never
// calls Finch, so it answers fast.
func (s *Server) handleWebhook(w http.ResponseWriter, r *http.Request) {
	status, result := s.webhook(w, r)
	webhooksTotal.WithLabelValues(result).Inc()
	writeWebhookAnswer(w, status)
}

func (s *Server) webhook(w http.ResponseWriter, r *http.Request) (int, string) {
	ns, name := r.PathValue("namespace"), r.PathValue("app")
	log := s.log.WithValues("webhook", ns+"/"+name)

	if r.ContentLength > s.cfg.MaxBodyBytes {
		return http.StatusRequestEntityTooLarge, webhookTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return http.StatusRequestEntityTooLarge, webhookTooLarge
		}
		return http.StatusBadRequest, webhookBadRequest
	}

	// No app, no webhook secret, bad signature: all the same 401.
	if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return http.StatusUnauthorized, webhookUnauthorized
	}
	key := types.NamespacedName{Namespace: ns, Name: name}
	// Detached from the request: if Finch stops waiting (a storm of webhooks
	// behind a busy API server), recording still completes, and Finch's retry
	// is then a cheap duplicate instead of a lost event.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), apiTimeout)
	defer cancel()
	app := &finchv1.FinchApp{}
	if err := s.cfg.Client.Get(ctx, key, app); err != nil {
		if apierrors.IsNotFound(err) {
			return http.StatusUnauthorized, webhookUnauthorized
		}
		log.Error(err, "webhook: cannot read the FinchApp")
		return http.StatusInternalServerError, webhookError
	}
	resolved, err := s.cfg.Apps.Get(ctx, app)
	if err != nil {
		var cfgErr *controllers.AppConfigError
		if errors.As(err, &cfgErr) {
			log.V(1).Info("webhook rejected: the FinchApp is not usable", "reason", cfgErr.Reason)
			return http.StatusUnauthorized, webhookUnauthorized
		}
		log.Error(err, "webhook: cannot resolve the FinchApp")
		return http.StatusInternalServerError, webhookError
	}
	if resolved.WebhookSecret == "" {
		log.V(1).Info("webhook rejected: the FinchApp has no webhookSecretRef")
		return http.StatusUnauthorized, webhookUnauthorized
	}
	if err := finch.Verify(body, r.Header, resolved.WebhookSecret, s.cfg.Now()); err != nil {
		if errors.Is(err, finch.ErrInvalidSecret) {
			log.Error(err, "webhook rejected: the FinchApp's webhook secret is not valid base64")
		} else {
			log.V(1).Info("webhook rejected", "reason", err.Error())
		}
		return http.StatusUnauthorized, webhookUnauthorized
	}

	// Verified: from here on the delivery comes from Finch.
	eventID := firstHeader(r.Header, finch.HeaderEventID)
	if len(eventID) > maxEventIDLen {
		log.Info("webhook rejected: Finch-Event-Id too long", "length", len(eventID))
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
		log.Info("webhook rejected: body is not a JSON object")
		return http.StatusBadRequest, webhookBadRequest
	}
	ev.EventID = eventID
	log = log.WithValues("eventType", ev.EventType, "connectionID", ev.ConnectionID)

	if ev.EventType != finch.EventAccountUpdated {
		s.seen.Add(dedupKey, struct{}{})
		log.V(1).Info("webhook: event type not acted on")
		return http.StatusOK, webhookIgnoredEventType
	}
	if ev.ConnectionID == "" {
		s.seen.Add(dedupKey, struct{}{})
		log.Info("webhook: account.updated without connection_id")
		return http.StatusOK, webhookUnknownConnection
	}
	list := &finchv1.FinchConnectionList{}
	if err := s.cfg.Client.List(ctx, list, client.InNamespace(ns),
		client.MatchingFields{controllers.IndexConnectionID: controllers.AppScoped(name, ev.ConnectionID)}); err != nil {
		log.Error(err, "webhook: cannot list FinchConnections")
		return http.StatusInternalServerError, webhookError
	}
	status := ev.Data.Status
	if len(status) > maxStatusLen {
		status = status[:maxStatusLen]
	}
	recorded, already := 0, 0
	for i := range list.Items {
		conn := &list.Items[i]
		if !conn.DeletionTimestamp.IsZero() {
			continue
		}
		if conn.Annotations[finchv1.WebhookEventAnnotation] == eventID {
			already++ // recorded by another replica (or before a restart)
			continue
		}
		if err := controllers.RecordWebhook(ctx, s.cfg.Client, conn, eventID, status); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			// Not remembered: Finch retries non-2xx answers.
			log.Error(err, "webhook: cannot record the event on the FinchConnection", "finchConnection", conn.Name)
			return http.StatusInternalServerError, webhookError
		}
		recorded++
		log.Info("webhook recorded", "finchConnection", conn.Name, "status", status)
	}
	s.seen.Add(dedupKey, struct{}{})
	switch {
	case recorded > 0:
		return http.StatusOK, webhookAccepted
	case already > 0:
		return http.StatusOK, webhookDuplicate
	default:
		log.V(1).Info("webhook: no FinchConnection has this connection")
		return http.StatusOK, webhookUnknownConnection
	}
}

// firstHeader is the first value of a header, matched case-insensitively
// like finch.Verify does.
func firstHeader(h http.Header, name string) string {
	if v := h.Values(name); len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}
