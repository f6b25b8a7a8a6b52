package finchsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
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
		writeError(w, http.StatusRequestEntityTooLarge, "bad_request", "invalid_request", "request body too large", nil)
		return
	}

	s.mu.Lock()
	s.calls[key]++
	f, faulted := s.takeFaultLocked(key, api)
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
		name, code := errorNameForStatus(f.Status)
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", retryAfterSeconds(f.RetryAfter))
		}
		writeError(w, f.Status, name, code, "injected fault", nil)
		s.record(key, f.Status)
		return
	}
	if api {
		if wait, limited := s.admit(key, r, body); limited {
			w.Header().Set("Retry-After", retryAfterSeconds(wait))
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

// takeFaultLocked returns the first queued fault matching the endpoint and consumes one use of it.
func (s *Sim) takeFaultLocked(key string, api bool) (Fault, bool) {
	for i, fe := range s.faults {
		if fe.endpoint != key && !(fe.endpoint == EndpointAny && api) {
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

// admit applies the app's sliding-window rate limit for this endpoint. The app is identified
// the way Finch would: Basic auth user, the bearer token's app, or /auth/token's body client_id.
// Only admitted requests occupy a slot.
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

// checkVersion enforces the Finch-API-Version header.
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
		writeError(w, http.StatusUnauthorized, "unauthorized_request_error", "", "Missing access token: send Authorization: Bearer <access_token>", nil)
		return nil, nil, false
	}
	t := s.tokens[v]
	if t == nil || t.revoked {
		writeError(w, http.StatusUnauthorized, "invalid_token_error", "", "The access token is invalid or has been revoked", nil)
		return nil, nil, false
	}
	c := s.connections[t.connectionID]
	if c == nil || c.disconnected {
		writeError(w, http.StatusUnauthorized, "invalid_token_error", "", "The access token is invalid or has been revoked", nil)
		return nil, nil, false
	}
	return t, c, true
}
