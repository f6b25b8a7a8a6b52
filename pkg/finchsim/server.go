package finchsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Endpoint keys, as used by Calls, Responses and InjectFault.
const (
	EndpointCreateSession = "POST /connect/sessions"
	EndpointReauthSession = "POST /connect/sessions/reauthenticate"
	EndpointToken         = "POST /auth/token"
	EndpointIntrospect    = "GET /introspect"
	EndpointDisconnect    = "POST /disconnect"
	EndpointDisconnectEnt = "POST /disconnect-entity"
	EndpointSandboxStatus = "PUT /sandbox/connections/accounts"
	EndpointAuthorize     = "GET /authorize" // the Connect page; only faults naming it explicitly apply
	EndpointAny           = "*"              // every Finch API endpoint (not /authorize, not /_sim/)
)

const maxBody = 1 << 20

type handlerFunc func(s *Sim, w http.ResponseWriter, r *http.Request, body []byte)

var apiRoutes = map[string]handlerFunc{
	EndpointCreateSession: (*Sim).handleCreateSession,
	EndpointReauthSession: (*Sim).handleReauthSession,
	EndpointToken:         (*Sim).handleToken,
	EndpointIntrospect:    (*Sim).handleIntrospect,
	EndpointDisconnect:    (*Sim).handleDisconnect,
	EndpointDisconnectEnt: (*Sim).handleDisconnectEntity,
	EndpointSandboxStatus: (*Sim).handleSandboxStatus,
}

// bufWriter buffers a handler's response so that the middleware can count it, or drop it
// (CommitThenDrop) after the operation took effect.
type bufWriter struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (b *bufWriter) Header() http.Header { return b.h }
func (b *bufWriter) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}
func (b *bufWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

func (s *Sim) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Finch-Request-Id", newUUID())
	if strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.simMux.ServeHTTP(w, r)
		return
	}
	key := r.Method + " " + r.URL.Path
	h, api := apiRoutes[key]
	if !api {
		if key != EndpointAuthorize {
			// developer.tryfinch.com /api-reference/development-guides/errors/Error-Types: 404 not_found_error.
			writeError(w, http.StatusNotFound, "not_found_error", "", "no route for "+key, nil)
			return
		}
		h = (*Sim).handleAuthorize
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		badRequest(w, "could not read request body")
		return
	}
	if len(body) > maxBody {
		// Finch documents no 413; the simulator answers with the documented validation pair
		// (Error-Types: bad_request / invalid_request).
		writeError(w, http.StatusRequestEntityTooLarge, "bad_request", "invalid_request", "request body too large", nil)
		return
	}

	s.mu.Lock()
	s.countCallLocked(key, bearerToken(r))
	f, faulted := s.takeFaultLocked(key, api, bearerToken(r))
	s.mu.Unlock()

	if faulted && f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.record(key, 0)
			return
		}
	}
	if faulted && f.Status != 0 {
		writeFault(w, f)
		s.record(key, f.Status)
		return
	}
	if api {
		if wait, retryAfter, limited := s.admitIP(r); limited {
			if retryAfter {
				w.Header().Set("Retry-After", retryAfterSeconds(wait))
			}
			// Error-Types: 429 rate_limit_exceeded_error, finch_code finch_api_ip_rl (per-IP
			// limit: 1,000 requests / 5 min, 60-minute penalty, finch-docs Rate-Limits.md).
			writeError(w, http.StatusTooManyRequests, "rate_limit_exceeded_error", "finch_api_ip_rl",
				"Rate limit exceeded for this IP address. Requests from it are refused until the penalty ends.", nil)
			s.record(key, http.StatusTooManyRequests)
			return
		}
		if wait, limited := s.admit(key, r, body); limited {
			w.Header().Set("Retry-After", retryAfterSeconds(wait))
			// Error-Types: 429 rate_limit_exceeded_error, finch_code finch_application_rl (the
			// per-application, per-endpoint limit).
			writeError(w, http.StatusTooManyRequests, "rate_limit_exceeded_error", "finch_application_rl",
				"Rate limit exceeded for this application and endpoint. Retry after the time in Retry-After.", nil)
			s.record(key, http.StatusTooManyRequests)
			return
		}
	}

	bw := &bufWriter{h: w.Header()}
	h(s, bw, r, body)
	if bw.status == 0 {
		bw.status = http.StatusOK
	}
	if faulted && f.CommitThenDrop {
		s.record(key, 0)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			s.logf("finchsim: CommitThenDrop on %s: hijack failed: %v; answering 502 instead", key, err)
			// Error-Types: 502 bad_gateway_error.
			writeError(w, http.StatusBadGateway, "bad_gateway_error", "", "connection dropped", nil)
			return
		}
		_ = conn.Close()
		return
	}
	w.WriteHeader(bw.status)
	_, _ = w.Write(bw.body.Bytes())
	s.record(key, bw.status)
}

func (s *Sim) record(key string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.responses[key]
	if m == nil {
		m = map[int]int{}
		s.responses[key] = m
	}
	m[status]++
}

// takeFaultLocked returns the first queued fault matching the endpoint (and the request's bearer
// token, for a fault limited to a token or connection) and consumes one use of it.
func (s *Sim) takeFaultLocked(key string, api bool, bearer string) (Fault, bool) {
	for i, fe := range s.faults {
		if fe.endpoint != key && !(fe.endpoint == EndpointAny && api) {
			continue
		}
		if !s.faultMatchesTokenLocked(fe.f, bearer) {
			continue
		}
		f := fe.f
		if fe.f.Count > 0 {
			fe.f.Count--
			if fe.f.Count == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return f, true
	}
	return Fault{}, false
}

func (s *Sim) faultMatchesTokenLocked(f Fault, bearer string) bool {
	if f.Token != "" && f.Token != bearer {
		return false
	}
	if f.ConnectionID != "" {
		t := s.tokens[bearer]
		return bearer != "" && t != nil && t.connectionID == f.ConnectionID
	}
	return true
}

// writeFault answers an injected status fault: the Finch error body for the status (or the
// fault's verbatim Body), Retry-After and x-should-retry as configured.
func writeFault(w http.ResponseWriter, f Fault) {
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(f.RetryAfter))
	}
	if f.XShouldRetry != "" {
		w.Header().Set("X-Should-Retry", f.XShouldRetry)
	}
	if f.Body != "" {
		// An answer Finch does not document (e.g. a gateway's): sent as is, so that the client's
		// handling of the unknown is exercised.
		ct := "text/plain; charset=utf-8"
		if json.Valid([]byte(f.Body)) {
			ct = "application/json"
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, f.Body)
		return
	}
	name, code := errorNameForStatus(f.Status)
	if f.Name != "" {
		name = f.Name
	}
	if f.FinchCode != "" {
		code = f.FinchCode
	}
	writeError(w, f.Status, name, code, faultMessage(f.Status), nil)
}

// admitIP applies the per-source-IP limit (see IPRateLimit). During a penalty every request is
// refused and the penalty is not extended (Finch documents nothing either way). Arrivals are
// counted whether or not the app limit then admits them: Finch's IP limit sees every request.
func (s *Sim) admitIP(r *http.Request) (wait time.Duration, retryAfter, limited bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ipLimit.Enabled {
		return 0, false, false
	}
	l := s.ipLimit.withDefaults()
	ip := sourceIP(r)
	now := s.now()
	if until := s.ipPenalty[ip]; now.Before(until) {
		return until.Sub(now), !l.NoRetryAfter, true
	}
	arr := s.ipArrivals[ip]
	cutoff := now.Add(-l.Window)
	i := 0
	for i < len(arr) && !arr[i].After(cutoff) {
		i++
	}
	arr = arr[i:]
	if len(arr) >= l.Requests {
		// This request exceeds the limit: the penalty starts now and the window starts over.
		s.ipPenalty[ip] = now.Add(l.Penalty)
		delete(s.ipArrivals, ip)
		return l.Penalty, !l.NoRetryAfter, true
	}
	s.ipArrivals[ip] = append(arr, now)
	return 0, false, false
}

// sourceIP is the request's peer address without the port (what Finch's per-IP limit keys on).
func sourceIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// admit applies the app's sliding-window rate limit for this endpoint. Finch counts it per
// application, that is per client_id, across all its access tokens, on a rolling 60-second
// window per endpoint (developer.tryfinch.com/api-reference/development-guides/Rate-Limits: "A
// Finch application has its own rate limits and all access tokens associated with the
// application will be subject to the application's rate limits ... A Finch application
// corresponds to a unique client_id"). The app is identified the way Finch would: Basic auth
// user, the bearer token's app, or /auth/token's body client_id. The check comes before the
// credentials are checked, so a request with the right client_id and a wrong secret (answered
// 401 invalid_client) still counts: the docs count requests made, and the strictest reading is
// that a rejected one is one. Only admitted requests occupy a slot.
func (s *Sim) admit(key string, r *http.Request, body []byte) (wait time.Duration, limited bool) {
	var clientID string
	if key == EndpointToken {
		var b struct {
			ClientID string `json:"client_id"`
		}
		_ = json.Unmarshal(body, &b)
		clientID = b.ClientID
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if clientID == "" {
		if u, _, ok := r.BasicAuth(); ok {
			clientID = u
		} else if t := s.tokens[bearerToken(r)]; t != nil {
			clientID = t.clientID
		}
	}
	if clientID == "" {
		return 0, false
	}
	rl := s.rateLimits[clientID]
	if rl.Requests <= 0 || rl.Window <= 0 {
		return 0, false
	}
	now := s.now()
	k := clientID + " " + key
	arr := s.arrivals[k]
	cutoff := now.Add(-rl.Window)
	i := 0
	for i < len(arr) && !arr[i].After(cutoff) {
		i++
	}
	arr = arr[i:]
	if len(arr) >= rl.Requests {
		s.arrivals[k] = arr
		return arr[len(arr)-rl.Requests].Add(rl.Window).Sub(now), true
	}
	s.arrivals[k] = append(arr, now)
	return 0, false
}

// checkVersion enforces the Finch-API-Version header, which the API reference marks required
// (developer.tryfinch.com/api-reference/connect/new-session); the answer is the documented validation pair (Error-Types: 400 bad_request /
// invalid_request).
func checkVersion(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Finch-API-Version") == "" {
		badRequest(w, "Missing required header: Finch-API-Version")
		return false
	}
	return true
}

var errBadClient = errors.New("invalid client credentials")

// appByCredentialsLocked checks client credentials.
func (s *Sim) appByCredentialsLocked(clientID, secret string) (*app, error) {
	a := s.apps[clientID]
	if clientID == "" || a == nil || !constantTimeEqual(a.cfg.ClientSecret, secret) {
		return nil, errBadClient
	}
	return a, nil
}

// invalidClient: developer.tryfinch.com /api-reference/development-guides/errors/Error-Types,
// 401 invalid_client_error ("bad client credentials").
func invalidClient(w http.ResponseWriter) {
	writeError(w, http.StatusUnauthorized, "invalid_client_error", "", "Invalid client_id or client_secret", nil)
}

// basicApp authenticates a Basic-auth request; on failure it writes the 401.
func (s *Sim) basicApp(w http.ResponseWriter, r *http.Request) (clientID string, ok bool) {
	u, p, ok := r.BasicAuth()
	if !ok {
		invalidClient(w)
		return "", false
	}
	s.mu.Lock()
	_, err := s.appByCredentialsLocked(u, p)
	s.mu.Unlock()
	if err != nil {
		invalidClient(w)
		return "", false
	}
	return u, true
}

// tokenLocked authenticates a Bearer request; on failure it writes the 401.
func (s *Sim) tokenLocked(w http.ResponseWriter, r *http.Request) (*token, *connection, bool) {
	v := bearerToken(r)
	if v == "" {
		// Error-Types: 401 unauthorized_request_error ("missing token").
		writeError(w, http.StatusUnauthorized, "unauthorized_request_error", "", "Missing access token: send Authorization: Bearer <access_token>", nil)
		return nil, nil, false
	}
	t := s.tokens[v]
	if t == nil || t.revoked {
		// Error-Types: 401 invalid_token_error ("bad access_token"); revoked tokens (disconnect,
		// replaced by reauthentication) get the same answer, which the docs do not distinguish.
		writeError(w, http.StatusUnauthorized, "invalid_token_error", "", "The access token is invalid or has been revoked", nil)
		return nil, nil, false
	}
	c := s.connections[t.connectionID]
	if c == nil || c.disconnected {
		// Error-Types: 401 invalid_token_error, as above.
		writeError(w, http.StatusUnauthorized, "invalid_token_error", "", "The access token is invalid or has been revoked", nil)
		return nil, nil, false
	}
	return t, c, true
}
