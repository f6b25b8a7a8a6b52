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

// ConnectionAlreadyExists reports a 400 connection_already_exists from
// POST /connect/sessions: the customer_id already has an authenticated
// connection, whose id Finch returns in context.connection_id (ok is true even
// if that id is missing).
func ConnectionAlreadyExists(err error) (connectionID string, ok bool) {
	fe, ok := asError(err)
	if !ok || fe.StatusCode != http.StatusBadRequest || fe.FinchCode != "connection_already_exists" {
		return "", false
	}
	id, _ := fe.Context["connection_id"].(string)
	return id, true
}

// IsReauthRequired reports a 401 reauthenticate_user: the employer must go
// through a reauthentication session.
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
// client_id/client_secret are wrong.
func IsInvalidClient(err error) bool {
	fe, ok := asError(err)
	return ok && fe.StatusCode == http.StatusUnauthorized && fe.Name == "invalid_client_error"
}

// IsInvalidToken reports a 401 meaning the access token is not (or no longer)
// valid, e.g. revoked by a disconnect or replaced by reauthentication.
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

// IsInvalidGrant reports a 400 invalid_grant_error: the authorization code is
// unknown, already used or expired (codes live 10 minutes).
func IsInvalidGrant(err error) bool {
	fe, ok := asError(err)
	return ok && fe.StatusCode == http.StatusBadRequest &&
		(fe.Name == "invalid_grant_error" || fe.Name == "invalid_grant")
}

// Class says how a controller should react to an error.
type Class int

const (
	// ClassTransient: retry later with backoff (5xx, 408, network, timeouts).
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
// classified by status: 429 RateLimited; 5xx and 408 Transient; any other
// status Terminal (4xx, and 1xx/3xx which mean a misconfigured API URL).
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
		case fe.StatusCode >= 500, fe.StatusCode == http.StatusRequestTimeout:
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
