package finch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func fmtV(v any) string { return fmt.Sprintf("%v %+v %#v %s", v, v, v, v) }

// migrationGuideBody is the connection_already_exists body exactly as Finch's
// Connection & Session ID Migration Guide shows it (trailing comma included).
const migrationGuideBody = `{
"code": 400,
"finch_code": "connection_already_exists",
"message": "There's an existing connection for the customer_id: <session.customer_id>. Please use the /connect/sessions/reauthenticate endpoint instead.",
"name": "bad_request",
"context": {
"customer_id": "<session.customer_id>",
"connection_id": "<connection.id>"
},
}`

func TestConnectionAlreadyExistsFromGuide(t *testing.T) {
	for _, tc := range []struct {
		name, customerID, connID string
	}{
		{"verbatim", "<session.customer_id>", "<connection.id>"},
		{"real values", "acme-corp-42", "9289c95e-9162-4221-a850-b8ee135d4d20"},
		{"short customer id", "acme", "conn-7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := strings.NewReplacer("<session.customer_id>", tc.customerID, "<connection.id>", tc.connID).Replace(migrationGuideBody)
			rc := &recorder{routes: map[string]http.HandlerFunc{
				"POST /connect/sessions": func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Finch-Request-Id", "req-123")
					jsonHandler(400, body)(w, r)
				},
			}}
			c := newTestClient(t, rc, nil)
			_, err := c.CreateSession(context.Background(), SessionRequest{
				CustomerID: tc.customerID, CustomerName: "Acme Corp", Products: []string{"company"},
			})
			id, ok := ConnectionAlreadyExists(err)
			if !ok || id != tc.connID {
				t.Fatalf("ConnectionAlreadyExists(%v) = %q, %v", err, id, ok)
			}
			if n := len(rc.requests()); n != 1 {
				t.Errorf("400 was retried: %d requests", n)
			}
			if Classify(err) != ClassTerminal {
				t.Errorf("class = %v", Classify(err))
			}
			var fe *Error
			if !errors.As(err, &fe) || fe.RequestID != "req-123" || fe.Name != "bad_request" || fe.Context["customer_id"] != tc.customerID {
				t.Fatalf("error = %#v", fe)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "finch POST /connect/sessions: 400 bad_request/connection_already_exists: There's an existing connection") ||
				!strings.HasSuffix(msg, "(request id req-123)") {
				t.Errorf("Error() = %q", msg)
			}
			if strings.Contains(msg, tc.customerID) || strings.Contains(msg, testClientSecret) {
				t.Errorf("Error() leaks the customer id: %q", msg)
			}
		})
	}
}

func TestDecodeErrorHelpers(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	type check struct {
		reauth, invalidClient, invalidToken, invalidGrant, rateLimited bool
		retryAfter                                                     time.Duration
		class                                                          Class
	}
	for _, tc := range []struct {
		name   string
		status int
		header http.Header
		body   string
		want   check
		name2  string // expected Name
		code   string // expected FinchCode
	}{
		{"reauth", 401, nil, `{"code":401,"name":"authentication_error","finch_code":"reauthenticate_user","message":"reconnect"}`,
			check{reauth: true, class: ClassTerminal}, "authentication_error", "reauthenticate_user"},
		{"invalid client, code as string", 401, nil, `{"code":"401","name":"invalid_client_error","message":"bad creds"}`,
			check{invalidClient: true, class: ClassTerminal}, "invalid_client_error", ""},
		{"invalid token", 401, nil, `{"code":401,"name":"invalid_token_error","message":"revoked"}`,
			check{invalidToken: true, class: ClassTerminal}, "invalid_token_error", ""},
		{"unauthorized", 401, nil, `{"statusCode":401,"name":"unauthorized"}`,
			check{invalidToken: true, class: ClassTerminal}, "unauthorized", ""},
		{"invalid grant", 400, nil, `{"code":400,"name":"invalid_grant_error","message":"code expired"}`,
			check{invalidGrant: true, class: ClassTerminal}, "invalid_grant_error", ""},
		{"429 retry-after-ms", 429, http.Header{"Retry-After-Ms": {"1500"}, "Retry-After": {"9"}},
			`{"code":429,"name":"rate_limit_exceeded_error","finch_code":"finch_application_rl","statusCode":429,"status":"x"}`,
			check{rateLimited: true, retryAfter: 1500 * time.Millisecond, class: ClassRateLimited}, "rate_limit_exceeded_error", "finch_application_rl"},
		{"429 retry-after seconds", 429, http.Header{"Retry-After": {"7"}}, `{}`,
			check{rateLimited: true, retryAfter: 7 * time.Second, class: ClassRateLimited}, "", ""},
		{"429 retry-after date", 429, http.Header{"Retry-After": {now.Add(42 * time.Second).Format(http.TimeFormat)}}, ``,
			check{rateLimited: true, retryAfter: 42 * time.Second, class: ClassRateLimited}, "", ""},
		{"429 no retry-after", 429, nil, `not json`,
			check{rateLimited: true, class: ClassRateLimited}, "", ""},
		{"503 retry-after", 503, http.Header{"Retry-After": {"3"}}, `{"name":"server_error"}`,
			check{retryAfter: 3 * time.Second, class: ClassTransient}, "server_error", ""},
		{"408", 408, nil, `{"name":"client_connection_closed"}`, check{class: ClassTransient}, "client_connection_closed", ""},
		{"409 lock timeout", 409, nil, `{}`, check{class: ClassTransient}, "", ""},
		{"301", 301, nil, ``, check{class: ClassTerminal}, "", ""},
		{"odd types", 400, nil, `{"code":{"x":1},"name":123,"finch_code":true,"message":["a"],"context":"nope"}`,
			check{class: ClassTerminal}, "123", "true"},
		{"oauth style", 400, nil, `{"error":"invalid_grant","error_description":"expired"}`,
			check{invalidGrant: true, class: ClassTerminal}, "invalid_grant", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			e := decodeError("POST /x", tc.status, h, []byte(tc.body), now, nil)
			err := fmt.Errorf("wrapped: %w", e)
			ra, rl := RateLimited(err)
			_, cae := ConnectionAlreadyExists(err)
			got := check{
				reauth: IsReauthRequired(err), invalidClient: IsInvalidClient(err), invalidToken: IsInvalidToken(err),
				invalidGrant: IsInvalidGrant(err), rateLimited: rl, retryAfter: ra, class: Classify(err),
			}
			if !rl {
				got.retryAfter = e.RetryAfter
			}
			if got != tc.want || cae {
				t.Errorf("got %+v (connection_already_exists %v), want %+v", got, cae, tc.want)
			}
			if e.Name != tc.name2 || e.FinchCode != tc.code || e.StatusCode != tc.status {
				t.Errorf("decoded %#v", e)
			}
		})
	}
}

func TestDecodeErrorNonJSONBody(t *testing.T) {
	body := "<html>\n<body>" + strings.Repeat("é", 400) + "</body></html>"
	e := decodeError(EndpointIntrospect, 502, http.Header{}, []byte(body), time.Now(), nil)
	if len(e.Message) > 512 || !utf8.ValidString(e.Message) || !strings.HasPrefix(e.Message, "<html> <body>é") {
		t.Fatalf("message (%d bytes) = %q", len(e.Message), e.Message)
	}
	if Classify(e) != ClassTransient {
		t.Errorf("502 class = %v", Classify(e))
	}
	empty := decodeError(EndpointIntrospect, 502, http.Header{}, nil, time.Now(), nil)
	if got := empty.Error(); got != "finch GET /introspect: 502 bad gateway" {
		t.Errorf("Error() = %q", got)
	}
}

func TestDecodeErrorRedactsBeforeTruncating(t *testing.T) {
	secret := "tok_" + strings.Repeat("x", 40)
	body := strings.Repeat("a", 500) + " " + secret
	e := decodeError(EndpointIntrospect, 500, http.Header{}, []byte(body), time.Now(), []string{secret})
	if strings.Contains(e.Message, "tok_xxx") {
		t.Fatalf("partial secret leaked: %q", e.Message)
	}
}

func TestRedactAll(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"customer acme not found", "customer [redacted] not found"},
		{"customer_id: acme.", "customer_id: [redacted]."},
		{"acmeish is fine, acme is not", "acmeish is fine, [redacted] is not"},
		{"long-secret-value123 embedded:xlong-secret-value123x", "[redacted] embedded:x[redacted]x"},
	} {
		if got := redactAll(tc.in, []string{"acme", "long-secret-value123", ""}); got != tc.want {
			t.Errorf("redactAll(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestClassifyNonHTTP(t *testing.T) {
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	for _, tc := range []struct {
		err  error
		want Class
	}{
		{fmt.Errorf("finch GET /introspect: %w", netErr), ClassTransient},
		{context.Canceled, ClassTransient},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), ClassTransient},
		{fmt.Errorf("x: %w", ErrInvalidArgument), ClassTerminal},
		{errors.New("finch GET /introspect: decoding response: bad"), ClassTransient},
		{nil, ClassTerminal},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestStripTrailingCommas(t *testing.T) {
	in := `{"a": "x,}", "b": [1, 2, ], "c": {"d": "\",]",},}`
	want := `{"a": "x,}", "b": [1, 2 ], "c": {"d": "\",]"}}`
	if got := string(stripTrailingCommas([]byte(in))); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}
