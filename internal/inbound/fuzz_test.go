package inbound_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// fuzzEnv is a namespace on the shared API server with two FinchApps: "fuzz"
// (a webhook secret, its Finch client pointed at a simulator) and "nohook"
// (no webhook secret). The handlers under fuzz are the real ones, with the
// manager's cached client: no fake Kubernetes client.
type fuzzEnv struct {
	e      *sharedEnv
	ns     string
	secret string
	paths  map[string]string // app -> its callback's secret path segment
}

var (
	fuzzOnce   sync.Once
	fuzzShared *fuzzEnv
	fuzzErr    error
)

func getFuzzEnv(tb testing.TB) *fuzzEnv {
	tb.Helper()
	e := getEnv(tb)
	fuzzOnce.Do(func() { fuzzShared, fuzzErr = setupFuzzEnv(e) })
	if fuzzErr != nil {
		tb.Fatalf("fuzz setup: %v", fuzzErr)
	}
	return fuzzShared
}

func setupFuzzEnv(e *sharedEnv) (*fuzzEnv, error) {
	ctx := context.Background()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	fz := &fuzzEnv{e: e, ns: "fuzz-" + randHex(4), secret: base64.StdEncoding.EncodeToString(key)}
	sim := finchsim.New(finchsim.Options{}) // lives as long as the process
	simURL := sim.Start()
	sim.AddApp(finchsim.AppConfig{ClientID: "fuzz", ClientSecret: "fuzz-secret"})
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fz.ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: fz.ns, Name: "creds"},
			Data: map[string][]byte{"client_id": []byte("fuzz"), "client_secret": []byte("fuzz-secret")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: fz.ns, Name: "hook"},
			Data: map[string][]byte{"webhook_secret": []byte(fz.secret)}},
	}
	for _, name := range []string{"fuzz", "nohook"} {
		app := &finchv1.FinchApp{
			ObjectMeta: metav1.ObjectMeta{Namespace: fz.ns, Name: name},
			Spec: finchv1.FinchAppSpec{
				CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "creds"},
				APIURL:               simURL, PublicURL: e.ts.URL,
				RateLimit: &finchv1.RateLimit{Requests: 100000, Window: &metav1.Duration{Duration: time.Minute}},
			},
		}
		if name == "fuzz" {
			app.Spec.WebhookSecretRef = &finchv1.WebhookSecretReference{Name: "hook"}
		}
		objs = append(objs, app)
	}
	for _, o := range objs {
		if err := e.k8s.Create(ctx, o); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(time.Minute)
	for _, name := range []string{"fuzz", "nohook"} {
		for {
			if err := e.cached.Get(ctx, types.NamespacedName{Namespace: fz.ns, Name: name}, &finchv1.FinchApp{}); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("FinchApp %s not in the cache", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The callback Secret's path segment, so fuzzing reaches the state check.
	fz.paths = map[string]string{}
	for _, name := range []string{"fuzz", "nohook"} {
		for {
			app := &finchv1.FinchApp{}
			if err := e.k8s.Get(ctx, types.NamespacedName{Namespace: fz.ns, Name: name}, app); err == nil && app.Status.CallbackURL != "" {
				fz.paths[name] = app.Status.CallbackURL[strings.LastIndex(app.Status.CallbackURL, "/")+1:]
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("FinchApp %s has no status.callbackURL", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return fz, nil
}

func isFixedWebhookBody(b []byte) bool {
	for _, v := range inbound.WebhookBodies {
		if bytes.Equal(b, v) {
			return true
		}
	}
	return false
}

func isFixedPage(b []byte) bool {
	for _, p := range inbound.AllPageBodies {
		if bytes.Equal(b, p) {
			return true
		}
	}
	return false
}

// FuzzWebhookHandler: the webhook handler never panics, answers only with its
// fixed bodies, and never answers 2xx to a delivery that is not signed with
// the app's secret. Signed deliveries (sign=true) drive the decoding and
// dispatch code with arbitrary bodies and event ids.
func FuzzWebhookHandler(f *testing.F) {
	now := time.Now().Unix()
	ts := strconv.FormatInt(now, 10)
	acct := []byte(`{"account_id":"a","company_id":"c","connection_id":"conn-1","event_type":"account.updated","data":{"status":"reauth","authentication_method":{"type":"credential"}}}`)
	f.Add(uint8(0), acct, "msg_2SFMDibF3lmRw8DzX4t1JjiEZQl", ts, "v1,8rFENj/WpNAMx+Kh5R1NLQunmpaBx4vOntjJdbGKbvM=", false)
	f.Add(uint8(0), acct, "msg_1", ts, "", true)
	f.Add(uint8(0), []byte(`{"event_type":"test"}`), "msg_2", ts, "", true)
	f.Add(uint8(0), []byte(`{"event_type":"account.updated","data":"connected"}`), "msg_3", ts, "", true)
	f.Add(uint8(0), []byte(`null`), "msg_4", ts, "", true)
	f.Add(uint8(0), []byte(`{"event_type":"account.updated","connection_id":{"x":1},"data":[]}`), "msg_5", ts, "", true)
	f.Add(uint8(0), acct, "", ts, "v1,", false)
	f.Add(uint8(0), acct, "msg_6", "99999999999999999999", "v1,AAAA v2,BBBB", false)
	f.Add(uint8(0), acct, "msg_7", "-1", "v1,a,b,c v1 v1,", false)
	f.Add(uint8(1), acct, "msg_8", ts, "", true)  // app without webhook secret
	f.Add(uint8(2), acct, "msg_9", ts, "", true)  // unknown app
	f.Add(uint8(4), acct, "msg_10", ts, "", true) // unknown namespace
	f.Add(uint8(0), bytes.Repeat([]byte("{"), 4096), "msg_11", ts, "", true)
	f.Fuzz(func(t *testing.T, target uint8, body []byte, eventID, timestamp, sig string, sign bool) {
		fz := getFuzzEnv(t)
		ns := fz.ns
		if target&4 != 0 {
			ns = "no-such-namespace"
		}
		app := []string{"fuzz", "nohook", "missing"}[int(target&3)%3]
		req := httptest.NewRequest(http.MethodPost, "/webhooks/"+ns+"/"+app, bytes.NewReader(body))
		signed := false
		if sign {
			at := time.Now()
			s, err := finch.Sign(body, eventID, at, fz.secret)
			if err != nil {
				t.Fatal(err)
			}
			timestamp, sig = strconv.FormatInt(at.Unix(), 10), s
			signed = eventID != "" && app == "fuzz" && ns == fz.ns
		}
		req.Header.Set(finch.HeaderEventID, eventID)
		req.Header.Set(finch.HeaderTimestamp, timestamp)
		req.Header.Set(finch.HeaderSignature, sig)
		rec := httptest.NewRecorder()
		fz.e.op.Inbound.Handler().ServeHTTP(rec, req)

		switch rec.Code {
		case http.StatusOK:
			if !signed {
				t.Fatalf("unsigned delivery answered 200 (app %s/%s)", ns, app)
			}
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body.String())
		}
		if !signed && rec.Code != http.StatusUnauthorized && rec.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("unsigned delivery answered %d", rec.Code)
		}
		if !isFixedWebhookBody(rec.Body.Bytes()) {
			t.Fatalf("unexpected body %q", rec.Body.String())
		}
	})
}

// FuzzCallbackHandler: the callback never panics, never reports success for
// a made-up code, and only ever answers with one of its fixed pages (nothing
// from the request is reflected).
func FuzzCallbackHandler(f *testing.F) {
	f.Add(uint8(0), "", "", "code=90abecb6-2b8e-4e45-a4c1-6b4f8e0d1a2c&state=xyz")
	f.Add(uint8(0), "", "", "code=")
	f.Add(uint8(0), "", "", "")
	f.Add(uint8(0), "", "", "code=a&code=b")
	f.Add(uint8(0), "", "", "code=%3Cscript%3Ealert(1)%3C/script%3E")
	f.Add(uint8(0), "", "", "code=x;y&state=%zz")
	f.Add(uint8(1), "", "", "code=abc") // app without webhook secret (usable for callbacks)
	f.Add(uint8(2), "", "", "code=abc") // unknown app
	f.Add(uint8(3), "Bad_NS", "x/../y", "code=abc")
	f.Add(uint8(3), "..", "%2F", "code=abc")
	f.Fuzz(func(t *testing.T, target uint8, nsSeg, appSeg, rawQuery string) {
		fz := getFuzzEnv(t)
		ns, app := fz.ns, "fuzz"
		switch target % 4 {
		case 1:
			app = "nohook"
		case 2:
			app = "missing"
		case 3:
			ns, app = nsSeg, appSeg
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path = "/callback/" + ns + "/" + app + "/" + fz.paths[app]
		if target%4 == 3 {
			req.URL.Path = "/callback/" + ns + "/" + app
		}
		req.URL.RawQuery = rawQuery
		req.RequestURI = req.URL.RequestURI()
		rec := httptest.NewRecorder()
		fz.e.op.Inbound.Handler().ServeHTTP(rec, req)

		switch rec.Code {
		case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			return // the mux cleaning the path
		case http.StatusOK, http.StatusSeeOther:
			t.Fatalf("a made-up code was answered %d", rec.Code)
		case http.StatusNotFound:
			return // not a callback path at all
		}
		if !isFixedPage(rec.Body.Bytes()) {
			t.Fatalf("status %d with a body that is not a fixed page: %q", rec.Code, rec.Body.String())
		}
	})
}
