package finch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/connectops/finch-operator/internal/budget"
)

// Defaults for Config.
const (
	DefaultBaseURL      = "https://api.tryfinch.com"
	DefaultAPIVersion   = "2020-09-17"
	DefaultMaxAttempts  = 3
	DefaultMaxRetryWait = 10 * time.Second
	DefaultTimeout      = 30 * time.Second
	// DefaultConnectBaseURL is the Finch Connect host (finch-api-go GetAuthURL,
	// finch-connect-sdk src/utils.ts BASE_FINCH_CONNECT_URI).
	DefaultConnectBaseURL = "https://connect.tryfinch.com"

	userAgent = "finch-connect-operator"
	// maxResponseBody bounds what the client reads from a 2xx response, and
	// maxErrorBody from an error response.
	maxResponseBody = 1 << 20
	maxErrorBody    = 64 << 10
)

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	BaseURL      string       // default "https://api.tryfinch.com"; may carry a path prefix
	APIVersion   string       // Finch-API-Version header, default "2020-09-17"
	ClientID     string       // application credentials, for the session and token calls
	ClientSecret string       //
	HTTPClient   *http.Client // default: a dedicated client that does not follow redirects
	// Limiter admits each attempt (the app's request budget and its API
	// host's per-IP guard: a budget.Gate); nil = a budget.Gate with a budget
	// of its own of budget.Default.
	Limiter      Limiter
	MaxAttempts  int           // total attempts for retryable calls, default 3
	MaxRetryWait time.Duration // longest Retry-After/backoff slept in-process, default 10s; longer returns the *Error so the caller requeues
	Timeout      time.Duration // per attempt, default 30s
	// MetricsApp is the key of the app object (a ClusterFinchApp's has no
	// namespace) whose "namespace" and "app" metric labels (AppLabels) the
	// client's series carry.
	MetricsApp types.NamespacedName
	// ConnectBaseURL is the Connect host of the link the Client builds when a
	// session response carries neither connect_url nor url; default
	// DefaultConnectBaseURL.
	ConnectBaseURL string
}

// String keeps the client secret out of accidental logs.
func (c Config) String() string {
	return fmt.Sprintf("finch.Config{BaseURL:%q APIVersion:%q MetricsApp:%q ClientSecret:[redacted]}",
		c.BaseURL, c.APIVersion, c.MetricsApp)
}

// GoString is String for %#v.
func (c Config) GoString() string { return c.String() }

// Limiter admits the attempts of a Client's calls, as middleware around its
// HTTP requests (budget.Gate is the operator's: the Finch application's
// request budget and the API host's per-IP guard).
type Limiter interface {
	// Acquire waits until one attempt at endpoint (an Endpoint* constant)
	// may be sent; the Client calls done with the time its response came
	// back. A *budget.PenaltyError refuses the attempt: nothing is sent.
	Acquire(ctx context.Context, endpoint string) (done func(time.Time), err error)
	// Penalize reports a 429 finch_api_ip_rl answer with its Retry-After (0
	// when none).
	Penalize(retryAfter time.Duration)
}

// Client calls the Finch API. It is safe for concurrent use.
type Client struct {
	baseURL      string // without trailing slash
	apiVersion   string
	clientID     string
	clientSecret string
	basicAuth    string // precomputed Authorization value; "" without credentials
	hc           *http.Client
	limiter      Limiter
	maxAttempts  int
	maxRetryWait time.Duration
	timeout      time.Duration
	metricsNS    string // "namespace" label of the client's series
	app          string // "app" label of the client's series
	connectBase  string // without trailing slash
}

// New validates cfg and returns a Client. BaseURL must be an absolute http(s)
// URL without user info, query or fragment. Credentials are checked when a
// call needs them, so a Client for bearer-token calls only may omit them.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("finch: invalid base URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("finch: base URL %q: scheme must be http or https", cfg.BaseURL)
	case u.Host == "":
		return nil, fmt.Errorf("finch: base URL %q has no host", cfg.BaseURL)
	case u.User != nil:
		// It would end up in error messages; credentials belong in ClientID/ClientSecret.
		return nil, errors.New("finch: base URL must not contain user info")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("finch: base URL %q must not have a query or fragment", u.Redacted())
	}
	if cfg.APIVersion == "" {
		cfg.APIVersion = DefaultAPIVersion
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient()
	}
	if cfg.Limiter == nil {
		cfg.Limiter = budget.Gate{Budget: budget.New(budget.Default)}
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxRetryWait <= 0 {
		cfg.MaxRetryWait = DefaultMaxRetryWait
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ConnectBaseURL == "" {
		cfg.ConnectBaseURL = DefaultConnectBaseURL
	}
	if cu, err := url.Parse(cfg.ConnectBaseURL); err != nil || (cu.Scheme != "http" && cu.Scheme != "https") || cu.Host == "" {
		return nil, fmt.Errorf("finch: connect base URL %q must be an absolute http(s) URL", cfg.ConnectBaseURL)
	}
	metricsNS, metricsApp := AppLabels(cfg.MetricsApp)
	c := &Client{
		baseURL:      strings.TrimRight(u.String(), "/"),
		apiVersion:   cfg.APIVersion,
		clientID:     cfg.ClientID,
		clientSecret: cfg.ClientSecret,
		hc:           cfg.HTTPClient,
		limiter:      cfg.Limiter,
		maxAttempts:  cfg.MaxAttempts,
		maxRetryWait: cfg.MaxRetryWait,
		timeout:      cfg.Timeout,
		metricsNS:    metricsNS,
		app:          metricsApp,
		connectBase:  strings.TrimRight(cfg.ConnectBaseURL, "/"),
	}
	if cfg.ClientID != "" && cfg.ClientSecret != "" {
		c.basicAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.ClientID+":"+cfg.ClientSecret))
	}
	return c, nil
}

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	return &http.Client{
		Transport: t,
		// The API never redirects; following one would re-send the body
		// somewhere unexpected. A 3xx surfaces as a Terminal *Error.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// String keeps credentials out of accidental logs.
func (c *Client) String() string { return "finch.Client{" + c.baseURL + "}" }

// GoString is String for %#v.
func (c *Client) GoString() string { return c.String() }

// CreateSession creates (or, for a customer_id that has not connected yet,
// refreshes) a Connect session. Finch makes it idempotent by customer_id, so
// it is retried on 429, 408, 409, 5xx and network errors. A customer that already has a
// connection yields an error for which ConnectionAlreadyExists is true.
func (c *Client) CreateSession(ctx context.Context, req SessionRequest) (*SessionResponse, error) {
	const ep = EndpointCreateSession
	if req.CustomerID == "" || req.CustomerName == "" || len(req.Products) == 0 {
		return nil, fmt.Errorf("finch %s: customer_id, customer_name and products are required: %w", ep, ErrInvalidArgument)
	}
	if err := c.needCredentials(ep); err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("finch %s: encoding request: %w", ep, err)
	}
	var out SessionResponse
	err = c.do(ctx, &call{
		endpoint: ep, method: http.MethodPost, path: "/connect/sessions",
		auth: c.basicAuth, body: body, policy: retryAll, out: &out,
		redact: []string{req.CustomerID, req.CustomerName, deref(req.CustomerEmail)},
	})
	if err != nil {
		return nil, err
	}
	if out.SessionID == "" {
		return nil, fmt.Errorf("finch %s: response has no session_id", ep)
	}
	c.ensureConnectURL(&out)
	return &out, nil
}

// Reauthenticate creates a reauthentication session for an existing
// connection. Each call mints a new session, so it is retried only on 429
// (rejected before processing), never after a 5xx or network error: persist
// the returned session before calling again.
func (c *Client) Reauthenticate(ctx context.Context, req ReauthRequest) (*SessionResponse, error) {
	const ep = EndpointReauthSession
	if req.ConnectionID == "" {
		return nil, fmt.Errorf("finch %s: connection_id is required: %w", ep, ErrInvalidArgument)
	}
	if err := c.needCredentials(ep); err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("finch %s: encoding request: %w", ep, err)
	}
	var out SessionResponse
	err = c.do(ctx, &call{
		endpoint: ep, method: http.MethodPost, path: "/connect/sessions/reauthenticate",
		auth: c.basicAuth, body: body, policy: retryRateLimited, out: &out,
	})
	if err != nil {
		return nil, err
	}
	if out.SessionID == "" {
		return nil, fmt.Errorf("finch %s: response has no session_id", ep)
	}
	c.ensureConnectURL(&out)
	return &out, nil
}

// ensureConnectURL makes sure a session is never returned without a link.
// Both SDKs type connect_url as required (finch-api-node
// src/resources/connect/sessions.ts SessionNewResponse and
// SessionReauthenticateResponse), but a reauthenticate response without it
// would otherwise leave the employer with nothing to open. Fall back to "url",
// then to the documented form <Connect host>/authorize?session=<session_id>
// (the parameter is "session": finch-api-node src/resources/connect/sessions.ts; Migration Guide "Redirect Flow").
func (c *Client) ensureConnectURL(s *SessionResponse) {
	switch {
	case s.ConnectURL != "":
		s.ConnectURLSource = ConnectURLFromBody
	case s.altURL != "":
		s.ConnectURL, s.ConnectURLSource = s.altURL, ConnectURLFromURLField
	default:
		s.ConnectURL = c.connectBase + "/authorize?session=" + url.QueryEscape(s.SessionID)
		s.ConnectURLSource = ConnectURLBuilt
	}
}

// ExchangeCode exchanges an authorization code for an access token. The
// credentials go in the JSON body and no Authorization header is sent. A code
// is single-use, so only 429 is retried. IsInvalidGrant reports a bad, used or
// expired code.
func (c *Client) ExchangeCode(ctx context.Context, req TokenRequest) (*TokenResponse, error) {
	const ep = EndpointToken
	if req.Code == "" {
		return nil, fmt.Errorf("finch %s: code is required: %w", ep, ErrInvalidArgument)
	}
	if err := c.needCredentials(ep); err != nil {
		return nil, err
	}
	body, err := json.Marshal(tokenWire{
		ClientID:     c.clientID,
		ClientSecret: c.clientSecret,
		Code:         req.Code,
		RedirectURI:  req.RedirectURI,
	})
	if err != nil {
		return nil, fmt.Errorf("finch %s: encoding request: %w", ep, err)
	}
	var out TokenResponse
	err = c.do(ctx, &call{
		endpoint: ep, method: http.MethodPost, path: "/auth/token",
		body: body, policy: retryRateLimited, out: &out,
		redact: []string{req.Code},
	})
	if err != nil {
		return nil, err
	}
	if out.AccessToken == "" {
		return nil, fmt.Errorf("finch %s: response has no access_token", ep)
	}
	return &out, nil
}

// Introspect reads the connection behind an access token. IsInvalidToken
// reports a revoked or replaced token.
func (c *Client) Introspect(ctx context.Context, accessToken string) (*Introspection, error) {
	const ep = EndpointIntrospect
	if accessToken == "" {
		return nil, fmt.Errorf("finch %s: access token is required: %w", ep, ErrInvalidArgument)
	}
	var out Introspection
	err := c.do(ctx, &call{
		endpoint: ep, method: http.MethodGet, path: "/introspect",
		auth: "Bearer " + accessToken, policy: retryAll, out: &out,
		redact: []string{accessToken},
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Disconnect revokes the connection behind an access token (and every token of
// that connection). It is retried; a retry after a lost response sees the
// token already revoked, so callers should treat a 401 as done: IsUnauthorized
// (any 401, whatever its body) rather than IsInvalidToken, because Finch does
// not document the body /disconnect answers for a revoked token.
func (c *Client) Disconnect(ctx context.Context, accessToken string) error {
	const ep = EndpointDisconnect
	if accessToken == "" {
		return fmt.Errorf("finch %s: access token is required: %w", ep, ErrInvalidArgument)
	}
	return c.do(ctx, &call{
		endpoint: ep, method: http.MethodPost, path: "/disconnect",
		auth: "Bearer " + accessToken, policy: retryAll,
		redact: []string{accessToken},
	})
}

// SandboxUpdateAccount forces a sandbox connection's status (e.g. "reauth") to
// exercise the operator's reactions. It sets a value, so it is retried.
func (c *Client) SandboxUpdateAccount(ctx context.Context, accessToken string, status string) error {
	const ep = EndpointSandboxStatus
	if accessToken == "" || status == "" {
		return fmt.Errorf("finch %s: access token and status are required: %w", ep, ErrInvalidArgument)
	}
	body, err := json.Marshal(SandboxAccountUpdate{ConnectionStatus: status})
	if err != nil {
		return fmt.Errorf("finch %s: encoding request: %w", ep, err)
	}
	return c.do(ctx, &call{
		endpoint: ep, method: http.MethodPut, path: "/sandbox/connections/accounts",
		auth: "Bearer " + accessToken, body: body, policy: retryAll,
		redact: []string{accessToken},
	})
}

func (c *Client) needCredentials(ep string) error {
	if c.clientID == "" || c.clientSecret == "" {
		return fmt.Errorf("finch %s: client credentials not configured: %w", ep, ErrInvalidArgument)
	}
	return nil
}

// call describes one API call.
type call struct {
	endpoint string // Endpoint* constant: metric label and budget key
	method   string
	path     string
	auth     string // Authorization header value; "" sends none
	body     []byte // nil sends no body
	policy   retryPolicy
	out      any      // decoded from a 2xx body; nil discards it
	redact   []string // request values to keep out of error messages
}

// attemptResult is the outcome of one attempt. reason is set when the
// failure may be retried under the call's policy.
type attemptResult struct {
	err        error
	reason     string
	retryAfter time.Duration
}

// do runs a call with bounded retries. Every attempt is first admitted by
// the limiter (waiting for it is not bounded by MaxRetryWait, only by ctx).
// During the per-IP penalty it sends nothing and returns a local *Error. It
// returns the last attempt's error: a *Error for HTTP failures, a wrapped
// error otherwise.
func (c *Client) do(ctx context.Context, cl *call) error {
	cl.redact = append(cl.redact, c.clientSecret)
	var lastErr error
	for n := 0; ; n++ {
		waitStart := time.Now()
		done, err := c.limiter.Acquire(ctx, cl.endpoint)
		if err != nil {
			var pe *budget.PenaltyError
			if errors.As(err, &pe) {
				// During Finch's per-IP penalty nothing is sent, not even a retry.
				return c.refused(cl.endpoint, pe)
			}
			return c.budgetErr(cl, lastErr, err)
		}
		budgetWait.WithLabelValues(c.metricsNS, c.app, cl.endpoint).Observe(time.Since(waitStart).Seconds())

		res := c.attempt(ctx, cl)
		done(time.Now())
		if res.err == nil {
			return nil
		}
		lastErr = res.err
		if res.reason == "" || n+1 >= c.maxAttempts || ctx.Err() != nil {
			return res.err
		}
		wait := res.retryAfter
		if wait <= 0 {
			wait = backoff(n)
		}
		if wait > c.maxRetryWait {
			// Do not hold a reconcile worker that long: the caller requeues.
			return res.err
		}
		retriesTotal.WithLabelValues(c.metricsNS, c.app, cl.endpoint, res.reason).Inc()
		if err := sleepCtx(ctx, wait); err != nil {
			return fmt.Errorf("%w; retry abandoned: %w", res.err, err)
		}
	}
}

// refused is the local error of a call the limiter refused during Finch's
// per-IP penalty: the 429 finch_api_ip_rl Finch would have answered.
func (c *Client) refused(endpoint string, pe *budget.PenaltyError) *Error {
	ipPenaltyRefused.WithLabelValues(c.metricsNS, c.app, endpoint).Inc()
	return &Error{
		StatusCode: http.StatusTooManyRequests,
		Name:       "rate_limit_exceeded_error",
		FinchCode:  finchCodeIPRateLimit,
		Message:    pe.Error(),
		RetryAfter: pe.Left,
		Endpoint:   endpoint,
		Local:      true,
	}
}

func (c *Client) budgetErr(cl *call, lastErr, err error) error {
	if lastErr != nil {
		return fmt.Errorf("%w; retry abandoned: %w", lastErr, err)
	}
	return fmt.Errorf("finch %s: waiting for request budget: %w", cl.endpoint, err)
}

// attempt sends one request, bounded by the per-attempt timeout.
func (c *Client) attempt(ctx context.Context, cl *call) attemptResult {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := c.newRequest(actx, cl)
	if err != nil {
		return attemptResult{err: fmt.Errorf("finch %s: building request: %w", cl.endpoint, err)}
	}

	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.observe(cl.endpoint, "network_error", start)
		res := attemptResult{err: fmt.Errorf("finch %s: %w", cl.endpoint, err)}
		if cl.policy == retryAll {
			res.reason = reasonNetwork
		}
		return res
	}
	defer resp.Body.Close()

	limit := int64(maxErrorBody)
	if resp.StatusCode/100 == 2 {
		limit = maxResponseBody
	}
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	c.observe(cl.endpoint, strconv.Itoa(resp.StatusCode), start)

	if resp.StatusCode/100 != 2 {
		// A truncated or interrupted error body still tells the status.
		fe := decodeError(cl.endpoint, resp.StatusCode, resp.Header, body[:min(len(body), maxErrorBody)], time.Now(), cl.redact)
		res := attemptResult{err: fe, retryAfter: fe.RetryAfter}
		// Retryable statuses as in the SDKs (finch-api-go
		// internal/requestconfig/requestconfig.go shouldRetry; finch-api-node
		// src/client.ts shouldRetry), narrowed by the call's policy.
		ipLimited := resp.StatusCode == http.StatusTooManyRequests && fe.FinchCode == finchCodeIPRateLimit
		switch {
		case ipLimited:
			// Error-Types: 429 finch_api_ip_rl is the per-IP penalty (60 min
			// per the rate-limit docs). Never retried in-process: pause every
			// Client sharing this host's guard instead (at most
			// budget.MaxIPPenalty).
			c.limiter.Penalize(fe.RetryAfter)
		case resp.StatusCode == http.StatusTooManyRequests:
			res.reason = reasonRateLimited
		case cl.policy == retryAll && resp.StatusCode == http.StatusConflict:
			res.reason = reasonConflict
		case cl.policy == retryAll && (resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout):
			res.reason = reasonServerError
		}
		// x-should-retry overrides the status both ways in the SDKs (same
		// functions); "true" is honoured only where the policy allows a retry
		// after which the request may have been processed, and never against
		// the per-IP penalty.
		switch strings.ToLower(strings.TrimSpace(resp.Header.Get("X-Should-Retry"))) {
		case "false":
			res.reason = ""
		case "true":
			if res.reason == "" && cl.policy == retryAll && !ipLimited {
				res.reason = reasonShouldRetry
			}
		}
		return res
	}

	if readErr != nil {
		res := attemptResult{err: fmt.Errorf("finch %s: reading response: %w", cl.endpoint, readErr)}
		if cl.policy == retryAll {
			res.reason = reasonNetwork
		}
		return res
	}
	if len(body) > maxResponseBody {
		return attemptResult{err: fmt.Errorf("finch %s: response larger than %d bytes", cl.endpoint, maxResponseBody)}
	}
	if cl.out == nil {
		return attemptResult{}
	}
	if err := json.Unmarshal(body, cl.out); err != nil {
		// Lenient: a field of an unexpected type is left empty, the rest is
		// decoded. Callers check the fields they require.
		var typeErr *json.UnmarshalTypeError
		if !errors.As(err, &typeErr) {
			return attemptResult{err: fmt.Errorf("finch %s: decoding response: %w", cl.endpoint, err)}
		}
	}
	return attemptResult{}
}

func (c *Client) newRequest(ctx context.Context, cl *call) (*http.Request, error) {
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, c.baseURL+cl.path, body)
	if err != nil {
		return nil, err
	}
	h := req.Header
	h.Set("Finch-API-Version", c.apiVersion)
	h.Set("Accept", "application/json")
	h.Set("User-Agent", userAgent)
	if cl.body != nil {
		h.Set("Content-Type", "application/json")
	}
	if cl.auth != "" {
		h.Set("Authorization", cl.auth)
	}
	return req, nil
}

func (c *Client) observe(endpoint, code string, start time.Time) {
	requestsTotal.WithLabelValues(c.metricsNS, c.app, endpoint, code).Inc()
	requestDuration.WithLabelValues(c.metricsNS, c.app, endpoint).Observe(time.Since(start).Seconds())
}
