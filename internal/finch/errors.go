package finch

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Error is a non-2xx response from Finch. Message has request values (tokens,
// secrets, customer identifiers) redacted; Context is kept as decoded because
// callers need e.g. context.connection_id.
type Error struct {
	StatusCode int            // HTTP status of the response
	Name       string         // body "name", e.g. bad_request, authentication_error
	FinchCode  string         // body "finch_code", e.g. connection_already_exists
	Message    string         // body "message", or the truncated body when it is not JSON
	Context    map[string]any // body "context", when present
	RetryAfter time.Duration  // from retry-after-ms / retry-after; 0 if absent
	RequestID  string         // Finch-Request-Id response header
	Endpoint   string         // e.g. "POST /connect/sessions"
	// Local marks an error the client made up without sending the request
	// (an IPGuard refusing calls during Finch's per-IP penalty): it is not a
	// Finch response and is not counted as one in metrics.
	Local bool
}

// Error renders "finch POST /connect/sessions: 400 bad_request/connection_already_exists: <message> (request id <id>)".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("finch")
	if e.Endpoint != "" {
		b.WriteString(" ")
		b.WriteString(e.Endpoint)
	}
	b.WriteString(": ")
	b.WriteString(strconv.Itoa(e.StatusCode))
	kind := e.Name
	if e.FinchCode != "" {
		if kind != "" {
			kind += "/"
		}
		kind += e.FinchCode
	}
	if kind == "" {
		kind = strings.ToLower(http.StatusText(e.StatusCode))
	}
	if kind != "" {
		b.WriteString(" ")
		b.WriteString(kind)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RequestID != "" {
		b.WriteString(" (request id ")
		b.WriteString(e.RequestID)
		b.WriteString(")")
	}
	return b.String()
}

// ErrInvalidArgument marks a request the client refused to send (a required
// field is empty, or the client has no credentials for the call). It is
// Terminal: sending it would only burn request budget.
var ErrInvalidArgument = errors.New("finch: invalid argument")

func asError(err error) (*Error, bool) {
	var fe *Error
	if err == nil || !errors.As(err, &fe) {
		return nil, false
	}
	return fe, true
}

// The error names and finch_codes below come from Finch's error table
// (developer.tryfinch.com /api-reference/development-guides/errors/Error-Types,
// docs/finch-api.md#errors) unless a comment says otherwise. The SDKs treat error bodies
// as opaque JSON (finch-api-go apierror.Error, finch-api-node APIError), so
// they cannot confirm names; the helpers therefore branch on the status first
// and keep the unknown safe (IsUnauthorized, Classify).

// ConnectionAlreadyExists reports a 400 connection_already_exists from
// POST /connect/sessions: the customer_id already has an authenticated
// connection, whose id Finch returns in context.connection_id (ok is true even
// if that id is missing). Body per the Connection & Session ID Migration
// Guide: {"code": 400, "finch_code": "connection_already_exists",
// "name": "bad_request", "context": {customer_id, connection_id}}.
func ConnectionAlreadyExists(err error) (connectionID string, ok bool) {
	fe, ok := asError(err)
	if !ok || fe.StatusCode != http.StatusBadRequest || fe.FinchCode != "connection_already_exists" {
		return "", false
	}
	id, _ := fe.Context["connection_id"].(string)
	return id, true
}

// IsReauthRequired reports a 401 reauthenticate_user: the employer must go
// through a reauthentication session (Error-Types: 401 authentication_error
// with finch_code reauthenticate_user; the name is not checked, the
// finch_code is the specific signal).
func IsReauthRequired(err error) bool {
	fe, ok := asError(err)
	return ok && fe.StatusCode == http.StatusUnauthorized && fe.FinchCode == "reauthenticate_user"
}

// RateLimited reports a 429 and the wait Finch asked for (0 if it gave none).
func RateLimited(err error) (retryAfter time.Duration, ok bool) {
	fe, ok := asError(err)
	if !ok || fe.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	return fe.RetryAfter, true
}

// IsInvalidClient reports a 401 invalid_client_error: the application's
// client_id/client_secret are wrong (Error-Types: 401 invalid_client_error).
func IsInvalidClient(err error) bool {
	fe, ok := asError(err)
	return ok && fe.StatusCode == http.StatusUnauthorized && fe.Name == "invalid_client_error"
}

// IsInvalidToken reports a 401 meaning the access token is not (or no longer)
// valid, e.g. revoked by a disconnect or replaced by reauthentication.
// Error-Types documents invalid_token_error (bad access_token) and
// unauthorized_request_error (missing token); "unauthorized" and
// "unauthorized_error" are undocumented spellings accepted defensively. A 401
// with another name is not reported here: see IsUnauthorized.
func IsInvalidToken(err error) bool {
	fe, ok := asError(err)
	if !ok || fe.StatusCode != http.StatusUnauthorized {
		return false
	}
	switch fe.Name {
	case "invalid_token_error", "unauthorized", "unauthorized_error", "unauthorized_request_error":
		return true
	}
	return false
}

// IsUnauthorized reports any 401 from Finch, whatever its body. Finch's docs
// do not say what every endpoint answers for a token that is already gone
// (the Error-Types page lists the names seen, not a contract), so callers for which
// any 401 means "nothing left to do" use this instead of IsInvalidToken: e.g.
// the deletion path treats any 401 on POST /disconnect as "token already
// revoked" rather than retrying forever. It is true for IsInvalidToken,
// IsInvalidClient and IsReauthRequired errors too; test those first where the
// difference matters.
func IsUnauthorized(err error) bool {
	fe, ok := asError(err)
	return ok && !fe.Local && fe.StatusCode == http.StatusUnauthorized
}

// IsInvalidGrant reports a 400 invalid_grant_error: the authorization code is
// unknown, already used or expired (codes live 10 minutes), or the
// redirect_uri does not match the session's (Error-Types: 400
// invalid_grant_error; "invalid_grant" is the RFC 6749 §5.2 spelling, accepted
// defensively).
func IsInvalidGrant(err error) bool {
	fe, ok := asError(err)
	return ok && fe.StatusCode == http.StatusBadRequest &&
		(fe.Name == "invalid_grant_error" || fe.Name == "invalid_grant")
}

// Class says how a controller should react to an error.
type Class int

const (
	// ClassTransient: retry later with backoff (5xx, 408, 409, network,
	// timeouts).
	ClassTransient Class = iota
	// ClassRateLimited: retry after RateLimited's duration (or backoff).
	ClassRateLimited
	// ClassTerminal: retrying the same request cannot help (other 4xx); a
	// human or a spec change is needed.
	ClassTerminal
)

func (c Class) String() string {
	switch c {
	case ClassTransient:
		return "transient"
	case ClassRateLimited:
		return "rate_limited"
	case ClassTerminal:
		return "terminal"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Classify maps an error from this package to a Class. Finch responses are
// classified by status: 429 RateLimited; 5xx, 408 and 409 Transient (the
// statuses both SDKs retry: finch-api-go internal/requestconfig/requestconfig.go
// shouldRetry, finch-api-node src/client.ts shouldRetry, which calls 409 a
// lock timeout); any other status Terminal (4xx, and 1xx/3xx which mean a
// misconfigured API URL). A local IPGuard refusal is a 429, so RateLimited.
// ErrInvalidArgument is Terminal. Everything else (network errors, timeouts,
// context cancellation, undecodable 2xx bodies) is Transient. Classify(nil) is
// ClassTerminal; do not call it with nil.
func Classify(err error) Class {
	if err == nil {
		return ClassTerminal
	}
	if fe, ok := asError(err); ok {
		switch {
		case fe.StatusCode == http.StatusTooManyRequests:
			return ClassRateLimited
		case fe.StatusCode >= 500, fe.StatusCode == http.StatusRequestTimeout, fe.StatusCode == http.StatusConflict:
			return ClassTransient
		default:
			return ClassTerminal
		}
	}
	if errors.Is(err, ErrInvalidArgument) {
		return ClassTerminal
	}
	return ClassTransient
}

const maxErrorMessage = 512

// maxErrorCode bounds the name and finch_code kept from an error body: Finch's
// are short identifiers, and a body that is not Finch's must not put more
// than that into a condition through them.
const maxErrorCode = 64

// decodeError builds an *Error from a non-2xx response. The body is decoded
// leniently: any field may be missing or of an unexpected type, and a body
// that is not a JSON object becomes the Message (whitespace collapsed,
// truncated to 512 bytes). Occurrences of the redact values are replaced in
// Message.
func decodeError(endpoint string, status int, h http.Header, body []byte, now time.Time, redact []string) *Error {
	e := &Error{
		StatusCode: status,
		Endpoint:   endpoint,
		RequestID:  h.Get("Finch-Request-Id"),
		RetryAfter: retryAfter(h, now),
	}
	m := decodeObject(body)
	if m == nil {
		e.Message = strings.Join(strings.Fields(string(body)), " ")
	} else {
		e.Name = anyString(m["name"])
		e.FinchCode = anyString(m["finch_code"])
		e.Message = anyString(m["message"])
		if ctx, ok := m["context"].(map[string]any); ok {
			e.Context = ctx
		}
		// OAuth-style bodies ({"error": "...", "error_description": "..."}).
		if e.Name == "" {
			e.Name = anyString(m["error"])
		}
		if e.Message == "" {
			e.Message = anyString(m["error_description"])
		}
	}
	// Redact before truncating so a secret cut in half cannot slip through.
	e.Message = truncate(redactAll(e.Message, redact), maxErrorMessage)
	e.Name = truncate(redactAll(e.Name, redact), maxErrorCode)
	e.FinchCode = truncate(redactAll(e.FinchCode, redact), maxErrorCode)
	return e
}

// decodeObject decodes a JSON object, retrying once with trailing commas
// removed: Finch's own migration guide shows the connection_already_exists
// body with one, so be tolerant of it. It returns nil if body is not an object.
func decodeObject(body []byte) map[string]any {
	var m map[string]any
	dec := func(b []byte) bool {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		m = nil
		return d.Decode(&m) == nil && m != nil
	}
	if dec(body) {
		return m
	}
	if fixed := stripTrailingCommas(body); !bytes.Equal(fixed, body) && dec(fixed) {
		return m
	}
	return nil
}

// stripTrailingCommas removes commas that are followed (after whitespace) by
// '}' or ']', outside string literals.
func stripTrailingCommas(b []byte) []byte {
	out := make([]byte, 0, len(b))
	inString, escaped := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			out = append(out, c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
		}
		if c == ',' {
			j := i + 1
			for j < len(b) && (b[j] == ' ' || b[j] == '\t' || b[j] == '\n' || b[j] == '\r') {
				j++
			}
			if j < len(b) && (b[j] == '}' || b[j] == ']') {
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

// anyString renders a decoded JSON scalar as a string ("" for null/objects).
func anyString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	}
	return ""
}

const ellipsis = "…"

// truncate cuts s to at most n bytes (ellipsis included) without splitting a
// UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

const redacted = "[redacted]"

// redactAll replaces the given values in s. Values of 8 bytes or more are
// replaced wherever they occur; shorter ones only as whole words, so that a
// short customer id like "acme" does not mangle unrelated text.
func redactAll(s string, values []string) string {
	for _, v := range values {
		if v == "" || !strings.Contains(s, v) {
			continue
		}
		if len(v) >= 8 {
			s = strings.ReplaceAll(s, v, redacted)
			continue
		}
		s = replaceWord(s, v)
	}
	return s
}

func replaceWord(s, w string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, w)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + len(w)
		if (i == 0 || !isWordByte(s[i-1])) && (end == len(s) || !isWordByte(s[end])) {
			b.WriteString(s[:i])
			b.WriteString(redacted)
		} else {
			b.WriteString(s[:end])
		}
		s = s[end:]
	}
}

func isWordByte(c byte) bool {
	return c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// finchCodeIPRateLimit is the finch_code of the per-IP 429
// (developer.tryfinch.com /api-reference/development-guides/errors/Error-Types:
// rate_limit_exceeded_error with finch_code finch_api_ip_rl).
const finchCodeIPRateLimit = "finch_api_ip_rl"

// IsIPRateLimited reports a 429 finch_api_ip_rl: Finch's per-IP penalty,
// either answered by Finch or refused locally during the pause (then the
// *Error has Local set; see budget.IPGuard). RateLimited gives the wait.
func IsIPRateLimited(err error) bool {
	var fe *Error
	return errors.As(err, &fe) && fe.StatusCode == http.StatusTooManyRequests && fe.FinchCode == finchCodeIPRateLimit
}
