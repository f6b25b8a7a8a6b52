package finchsim

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testClientID = "app-1"
	testSecret   = "s3cret"
	apiVersion   = "2020-09-17"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	t     *testing.T
	sim   *Sim
	url   string
	clock *fakeClock
	hc    *http.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clock := newFakeClock()
	sim := New(Options{Clock: clock.Now, Logf: t.Logf})
	sim.AddApp(AppConfig{ClientID: testClientID, ClientSecret: testSecret})
	u := sim.Start()
	t.Cleanup(sim.Close)
	return &env{
		t: t, sim: sim, url: u, clock: clock,
		hc: &http.Client{
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

func (r resp) str(t *testing.T, key string) string {
	t.Helper()
	v, _ := r.obj(t)[key].(string)
	return v
}

// request options
type reqOpt func(*http.Request)

func withBasic(id, secret string) reqOpt {
	return func(r *http.Request) { r.SetBasicAuth(id, secret) }
}
func withBearer(tok string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}
func withoutVersion() reqOpt { return func(r *http.Request) { r.Header.Del("Finch-API-Version") } }
func withHeader(k, v string) reqOpt {
	return func(r *http.Request) { r.Header.Set(k, v) }
}

func (e *env) send(method, path string, body any, opts ...reqOpt) (resp, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	target := path
	if !strings.HasPrefix(path, "http") {
		target = e.url + path
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Finch-API-Version", apiVersion)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	res, err := e.hc.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}, nil
}

func (e *env) do(method, path string, body any, opts ...reqOpt) resp {
	e.t.Helper()
	r, err := e.send(method, path, body, opts...)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func (e *env) basic(method, path string, body any, opts ...reqOpt) resp {
	e.t.Helper()
	return e.do(method, path, body, append([]reqOpt{withBasic(testClientID, testSecret)}, opts...)...)
}

func sessionBody(customerID string, extra map[string]any) map[string]any {
	b := map[string]any{"customer_id": customerID, "customer_name": "Customer " + customerID, "products": []string{"company", "directory"}}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

func (e *env) createSession(customerID string, extra map[string]any) (sessionID, connectURL string) {
	e.t.Helper()
	r := e.basic("POST", "/connect/sessions", sessionBody(customerID, extra))
	if r.status != 201 {
		e.t.Fatalf("create session %s: %d %s", customerID, r.status, r.body)
	}
	return r.str(e.t, "session_id"), r.str(e.t, "connect_url")
}

func (e *env) exchange(code, redirectURI string) resp {
	e.t.Helper()
	b := map[string]any{"client_id": testClientID, "client_secret": testSecret, "code": code}
	if redirectURI != "" {
		b["redirect_uri"] = redirectURI
	}
	return e.do("POST", "/auth/token", b)
}

// connect runs a whole embedded connect flow and returns the session, connection and token.
func (e *env) connect(customerID string) (sessionID, connectionID, token string) {
	e.t.Helper()
	sessionID, _ = e.createSession(customerID, nil)
	code, err := e.sim.CompleteSession(sessionID, Completion{})
	if err != nil {
		e.t.Fatal(err)
	}
	r := e.exchange(code, "")
	if r.status != 200 {
		e.t.Fatalf("exchange: %d %s", r.status, r.body)
	}
	return sessionID, r.str(e.t, "connection_id"), r.str(e.t, "access_token")
}

func (e *env) introspect(tok string) resp {
	e.t.Helper()
	return e.do("GET", "/introspect", nil, withBearer(tok))
}

func expectError(t *testing.T, r resp, status int, name, finchCode string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	m := r.obj(t)
	if got, _ := m["code"].(float64); int(got) != status {
		t.Errorf("body code = %v, want %d", m["code"], status)
	}
	if m["name"] != name {
		t.Errorf("name = %v, want %s (body %s)", m["name"], name, r.body)
	}
	if fc, _ := m["finch_code"].(string); fc != finchCode {
		t.Errorf("finch_code = %q, want %q", fc, finchCode)
	}
	if msg, _ := m["message"].(string); msg == "" {
		t.Errorf("empty message in %s", r.body)
	}
	return m
}

// verifyFinchSignature is an independent verifier written from finch-api-node src/resources/webhooks.ts.
func verifyFinchSignature(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(secret)
	if err != nil {
		return err
	}
	id, ts := h.Get("finch-event-id"), h.Get("finch-timestamp")
	sigs := h.Values("finch-signature")
	if id == "" || ts == "" || len(sigs) == 0 {
		return errors.New("missing webhook headers")
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("bad timestamp: %w", err)
	}
	if now.Unix()-n > 300 || n-now.Unix() > 300 {
		return errors.New("timestamp outside tolerance")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, v := range sigs {
		for _, item := range strings.Fields(v) {
			ver, sig, ok := strings.Cut(item, ",")
			if ok && ver == "v1" && hmac.Equal([]byte(sig), []byte(want)) {
				return nil
			}
		}
	}
	return errors.New("no matching v1 signature")
}

func queryOf(t *testing.T, raw string) url.Values {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}
