package finch

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Webhook headers (matched case-insensitively).
const (
	HeaderEventID   = "Finch-Event-Id"
	HeaderTimestamp = "Finch-Timestamp"
	HeaderSignature = "Finch-Signature"
)

// WebhookTolerance is how far a webhook timestamp may be from now, either way.
const WebhookTolerance = 300 * time.Second

// ErrWebhook is wrapped by every verification failure, so a receiver can
// answer them all the same way. ErrInvalidSecret is a configuration error
// instead and does not wrap it.
var ErrWebhook = errors.New("finch webhook verification failed")

var (
	ErrMissingHeaders      = fmt.Errorf("%w: missing finch-event-id, finch-timestamp or finch-signature header", ErrWebhook)
	ErrInvalidTimestamp    = fmt.Errorf("%w: finch-timestamp is not an integer", ErrWebhook)
	ErrTimestampTooOld     = fmt.Errorf("%w: timestamp too old", ErrWebhook)
	ErrTimestampTooNew     = fmt.Errorf("%w: timestamp too new", ErrWebhook)
	ErrNoMatchingSignature = fmt.Errorf("%w: no matching v1 signature", ErrWebhook)
	ErrInvalidSecret       = errors.New("finch webhook: secret is not valid standard base64")
)

// Verify checks a webhook delivery as Finch's SDKs do (finch-api-node
// src/resources/webhooks.ts verifySignature, finch-api-go webhook.go):
//
//   - secret is standard base64 (with padding; surrounding whitespace, e.g. a
//     trailing newline from a Secret, is ignored) and its bytes are the HMAC key;
//   - finch-event-id, finch-timestamp and finch-signature must be present;
//   - the timestamp is integer unix seconds within WebhookTolerance of now;
//   - the expected signature is base64(HMAC-SHA256(key, "{event_id}.{timestamp}.{body}"))
//     with the headers' exact text and the raw body;
//   - finch-signature holds space-separated "version,signature" items (in one
//     or several header values); only v1 items count, and any match accepts.
//     Comparison is constant-time.
func Verify(body []byte, h http.Header, secret string, now time.Time) error {
	key, err := decodeWebhookSecret(secret)
	if err != nil {
		return err
	}
	eventID := FirstHeader(h, HeaderEventID)
	ts := FirstHeader(h, HeaderTimestamp)
	sigs := headerValues(h, HeaderSignature)
	if eventID == "" || ts == "" || strings.TrimSpace(strings.Join(sigs, "")) == "" {
		return ErrMissingHeaders
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrInvalidTimestamp
	}
	// Compare rather than subtract: ts is attacker-controlled and could overflow.
	nowSec := now.Unix()
	if sec < nowSec-int64(WebhookTolerance/time.Second) {
		return ErrTimestampTooOld
	}
	if sec > nowSec+int64(WebhookTolerance/time.Second) {
		return ErrTimestampTooNew
	}
	expected := signature(key, eventID, ts, body)
	for _, v := range sigs {
		for _, item := range strings.Fields(v) {
			version, sig, ok := strings.Cut(item, ",")
			if ok && version == "v1" && hmac.Equal([]byte(sig), expected) {
				return nil
			}
		}
	}
	return ErrNoMatchingSignature
}

// Sign returns the finch-signature value ("v1,<base64>") Finch would send for
// body with the given event id and timestamp. The timestamp header must be
// strconv.FormatInt(ts.Unix(), 10).
func Sign(body []byte, eventID string, ts time.Time, secret string) (string, error) {
	key, err := decodeWebhookSecret(secret)
	if err != nil {
		return "", err
	}
	return "v1," + string(signature(key, eventID, strconv.FormatInt(ts.Unix(), 10), body)), nil
}

func decodeWebhookSecret(secret string) ([]byte, error) {
	secret = strings.TrimSpace(secret)
	if secret == "" {
		// An empty key would let anyone compute valid signatures.
		return nil, ErrInvalidSecret
	}
	key, err := base64.StdEncoding.Strict().DecodeString(secret)
	// DecodeString skips embedded newlines; like Finch's node SDK, accept
	// only the canonical encoding.
	if err != nil || len(key) == 0 || base64.StdEncoding.EncodeToString(key) != secret {
		return nil, ErrInvalidSecret
	}
	return key, nil
}

// signature returns base64(HMAC-SHA256(key, eventID "." ts "." body)).
func signature(key []byte, eventID, ts string, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(eventID))
	mac.Write([]byte{'.'})
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	var sum [sha256.Size]byte
	out := make([]byte, base64.StdEncoding.EncodedLen(sha256.Size))
	base64.StdEncoding.Encode(out, mac.Sum(sum[:0]))
	return out
}

// headerValues returns all values of a header, matching the name
// case-insensitively even in a map that was not built with canonical keys.
func headerValues(h http.Header, name string) []string {
	if v := h.Values(name); len(v) > 0 {
		return v
	}
	var out []string
	for k, v := range h {
		if strings.EqualFold(k, name) {
			out = append(out, v...)
		}
	}
	return out
}

// FirstHeader is the first value of a header, matched case-insensitively
// (Verify reads the webhook headers this way; the inbound server reads
// Finch-Event-Id the same way so the two never disagree).
func FirstHeader(h http.Header, name string) string {
	if v := headerValues(h, name); len(v) > 0 {
		return v[0]
	}
	return ""
}

// WebhookEvent is a decoded webhook body. EventID is not in the body: the
// caller copies it from the Finch-Event-Id header.
type WebhookEvent struct {
	EventID      string      `json:"-"`
	EventType    string      `json:"event_type"`
	ConnectionID string      `json:"connection_id"`
	AccountID    string      `json:"account_id,omitempty"`
	CompanyID    string      `json:"company_id,omitempty"`
	EntityID     string      `json:"entity_id,omitempty"`
	Data         WebhookData `json:"data"`
}

// WebhookData holds the fields of "data" the operator uses, plus the raw JSON
// (nil when "data" is absent).
type WebhookData struct {
	// Status is data.status of account.updated (a connection status).
	Status string `json:"status,omitempty"`
	// AuthenticationMethod is data.authentication_method: the SDK types it as
	// an object with "type", older docs as a plain string; both decode here.
	AuthenticationMethod string `json:"authentication_method,omitempty"`
	// JobID is data.job_id of a job event (finch-api-node src/resources/webhooks.ts
	// JobCompletionEvent.Data).
	JobID string          `json:"job_id,omitempty"`
	Raw   json.RawMessage `json:"-"`
}

// ParseEvent decodes a webhook body leniently: unknown event types and fields
// are kept or ignored, fields of unexpected types are left empty, and data may
// be missing, null or any JSON value. It fails only when body is not a JSON
// object.
func ParseEvent(body []byte) (*WebhookEvent, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("finch webhook: body is not a JSON object: %w", err)
	}
	if m == nil { // the body was the literal null
		return nil, errors.New("finch webhook: body is not a JSON object")
	}
	ev := &WebhookEvent{
		EventType:    lenientString(m["event_type"]),
		ConnectionID: lenientString(m["connection_id"]),
		AccountID:    lenientString(m["account_id"]),
		CompanyID:    lenientString(m["company_id"]),
		EntityID:     lenientString(m["entity_id"]),
	}
	if raw, ok := m["data"]; ok {
		ev.Data.Raw = raw
		var d map[string]json.RawMessage
		if trimmed := bytes.TrimSpace(raw); len(trimmed) > 0 && trimmed[0] == '{' && json.Unmarshal(trimmed, &d) == nil {
			ev.Data.Status = lenientString(d["status"])
			ev.Data.AuthenticationMethod = authMethod(d["authentication_method"])
			ev.Data.JobID = lenientString(d["job_id"])
		}
	}
	return ev, nil
}

// authMethod accepts "assisted" or {"type": "assisted", ...}.
func authMethod(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '{' {
		var o map[string]json.RawMessage
		if json.Unmarshal(raw, &o) == nil {
			return lenientString(o["type"])
		}
		return ""
	}
	return lenientString(raw)
}
