package finchsim

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// apiError is Finch's error body. Field order follows the migration guide's example
// (code, finch_code, message, name, context).
type apiError struct {
	Code      int    `json:"code"`
	FinchCode string `json:"finch_code,omitempty"`
	Message   string `json:"message"`
	Name      string `json:"name"`
	Context   any    `json:"context,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// writeError writes Finch's error body, {code, name, finch_code?, message, context?}
// (developer.tryfinch.com /api-reference/development-guides/errors/Error-Types; context as in the
// Migration Guide's connection_already_exists example). Callers cite the name they use.
func writeError(w http.ResponseWriter, status int, name, finchCode, message string, ctx any) {
	writeJSON(w, status, apiError{Code: status, FinchCode: finchCode, Message: message, Name: name, Context: ctx})
}

// badRequest: developer.tryfinch.com /api-reference/development-guides/errors/Error-Types,
// 400 bad_request / invalid_request ("validation failed").
func badRequest(w http.ResponseWriter, message string) {
	writeError(w, http.StatusBadRequest, "bad_request", "invalid_request", message, nil)
}

// errorNameForStatus picks the Finch error name and finch_code for an injected fault status, from
// Finch's error table (developer.tryfinch.com /api-reference/development-guides/errors/Error-Types,
// docs/finch-api.md#errors) where it lists the status; the other choices are marked.
func errorNameForStatus(status int) (name, finchCode string) {
	switch status {
	case 400:
		return "bad_request", "invalid_request"
	case 401:
		// The documented 401 a healthy token gets when the employer must reconnect.
		return "authentication_error", "reauthenticate_user"
	case 402:
		return "payment_required", "payment_required"
	case 403:
		return "insufficient_scope_error", ""
	case 404:
		return "not_found_error", "item_not_found"
	case 408:
		return "client_connection_closed", ""
	case 409:
		// Not in Finch's table. Both SDKs retry 409 as a lock timeout (finch-api-node
		// src/client.ts shouldRetry: "Retry on lock timeouts"; finch-api-go
		// internal/requestconfig/requestconfig.go shouldRetry), so the fault models one.
		return "conflict_error", "" // name: simulator choice
	case 422:
		return "unprocessable_request_error", "unsupported_parameters"
	case 429:
		return "rate_limit_exceeded_error", "finch_application_rl"
	case 500:
		return "server_error", ""
	case 501:
		return "not_implemented_error", ""
	case 502:
		return "bad_gateway_error", "upstream_provider_error"
	case 503:
		return "service_unavailable_error", "" // not in the table: simulator choice
	case 504:
		return "gateway_timeout_error", "" // not in the table: simulator choice
	}
	if status >= 500 {
		return "server_error", ""
	}
	return "bad_request", "" // not in the table: simulator choice
}

// faultMessage is the message of an injected fault's error body.
func faultMessage(status int) string {
	switch status {
	case 401:
		return "injected fault: the employer must reauthenticate this connection"
	case 409:
		return "injected fault: lock timeout; another request for this resource was in progress"
	}
	return "injected fault"
}

// retryAfterSeconds renders a duration as a Retry-After value: whole seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	secs := int64(math.Ceil(d.Seconds()))
	if secs < 1 {
		secs = 1
	}
	return strconv.FormatInt(secs, 10)
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// isUUID reports whether v is a UUID in its canonical 8-4-4-4-12 hex form (the docs type
// entity IDs string<uuid>).
func isUUID(v string) bool {
	if len(v) != 36 {
		return false
	}
	for i, r := range v {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return false
			}
		}
	}
	return true
}

func randBase62(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = base62[int(b[i])%len(base62)]
	}
	return string(b)
}

// decodeJSON decodes a request body and turns decoding errors into messages that name the field.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("request body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("invalid type for field %s: expected %s", te.Field, te.Type.String())
		}
		return fmt.Errorf("request body is not valid JSON: %w", err)
	}
	return nil
}

func bearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func cloneStrings(in []string) []string {
	if in == nil {
		return []string{}
	}
	return append([]string(nil), in...)
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
