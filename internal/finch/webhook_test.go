package finch

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testWebhookSecret is the example secret from Finch's webhook docs.
const (
	testWebhookSecret = "5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH"
	oldWebhookSecret  = "b2xkLXNlY3JldC1rZXktYmVmb3JlLXJvdGF0aW9u" // "old-secret-key-before-rotation"
	testEventID       = "msg_2SFMDibF3lmRw8DzX4t1JjiEZQl"
)

var (
	testEventBody = []byte(`{"account_id":"acc","company_id":"co","connection_id":"conn-1","event_type":"account.updated","data":{"status":"reauth","authentication_method":{"type":"credential"}}}`)
	testEventTime = time.Unix(1688737757, 0)
)

func mustSign(t testing.TB, body []byte, eventID string, ts time.Time, secret string) string {
	t.Helper()
	s, err := Sign(body, eventID, ts, secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func webhookHeader(eventID, ts string, sigs ...string) http.Header {
	h := http.Header{}
	if eventID != "" {
		h.Set("finch-event-id", eventID)
	}
	if ts != "" {
		h.Set("finch-timestamp", ts)
	}
	for _, s := range sigs {
		h.Add("finch-signature", s)
	}
	return h
}

// expectedSig is an independent implementation of the signature for tests.
func expectedSig(secret, eventID, ts string, body []byte) string {
	key, _ := base64.StdEncoding.DecodeString(secret)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(eventID + "." + ts + "."))
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func TestSignMatchesReference(t *testing.T) {
	ts := strconv.FormatInt(testEventTime.Unix(), 10)
	want := "v1," + expectedSig(testWebhookSecret, testEventID, ts, testEventBody)
	if got := mustSign(t, testEventBody, testEventID, testEventTime, testWebhookSecret); got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	ts := strconv.FormatInt(testEventTime.Unix(), 10)
	valid := mustSign(t, testEventBody, testEventID, testEventTime, testWebhookSecret)
	validSig := strings.TrimPrefix(valid, "v1,")
	oldKey := mustSign(t, testEventBody, testEventID, testEventTime, oldWebhookSecret)
	otherBody := mustSign(t, []byte(`{"event_type":"account.updated"}`), testEventID, testEventTime, testWebhookSecret)

	for _, tc := range []struct {
		name   string
		body   []byte
		h      http.Header
		secret string
		now    time.Time
		want   error
	}{
		{"valid", testEventBody, webhookHeader(testEventID, ts, valid), testWebhookSecret, testEventTime, nil},
		{"valid, lowercase map keys", testEventBody, http.Header{
			"finch-event-id": {testEventID}, "finch-timestamp": {ts}, "finch-signature": {valid},
		}, testWebhookSecret, testEventTime, nil},
		{"secret with trailing newline", testEventBody, webhookHeader(testEventID, ts, valid), testWebhookSecret + "\n", testEventTime, nil},
		{"rotated key: second item matches", testEventBody, webhookHeader(testEventID, ts, oldKey+" "+valid), testWebhookSecret, testEventTime, nil},
		{"rotated key: first item matches", testEventBody, webhookHeader(testEventID, ts, valid+"  v2,abc "+oldKey), testWebhookSecret, testEventTime, nil},
		{"multiple header values", testEventBody, webhookHeader(testEventID, ts, oldKey, "v1,garbage "+valid), testWebhookSecret, testEventTime, nil},
		{"within tolerance old", testEventBody, webhookHeader(testEventID, ts, valid), testWebhookSecret, testEventTime.Add(300 * time.Second), nil},
		{"within tolerance new", testEventBody, webhookHeader(testEventID, ts, valid), testWebhookSecret, testEventTime.Add(-300 * time.Second), nil},

		{"tampered body", append(append([]byte{}, testEventBody...), ' '), webhookHeader(testEventID, ts, valid), testWebhookSecret, testEventTime, ErrNoMatchingSignature},
		{"signature of another body", testEventBody, webhookHeader(testEventID, ts, otherBody), testWebhookSecret, testEventTime, ErrNoMatchingSignature},
		{"tampered timestamp", testEventBody, webhookHeader(testEventID, strconv.FormatInt(testEventTime.Unix()+1, 10), valid), testWebhookSecret, testEventTime, ErrNoMatchingSignature},
		{"tampered event id", testEventBody, webhookHeader("msg_other", ts, valid), testWebhookSecret, testEventTime, ErrNoMatchingSignature},
		{"old key only", testEventBody, webhookHeader(testEventID, ts, oldKey), testWebhookSecret, testEventTime, ErrNoMatchingSignature},
		{"v2 only", testEventBody, webhookHeader(testEventID, ts, "v2,"+validSig), testWebhookSecret, testEventTime, ErrNoMatchingSignature},
		{"no version", testEventBody, webhookHeader(testEventID, ts, validSig), testWebhookSecret, testEventTime, ErrNoMatchingSignature},
		{"comma-joined items (Go SDK bug shape)", testEventBody, webhookHeader(testEventID, ts, "v1,abc,"+validSig), testWebhookSecret, testEventTime, ErrNoMatchingSignature},
		{"malformed base64 signature", testEventBody, webhookHeader(testEventID, ts, "v1,!!!not-base64==="), testWebhookSecret, testEventTime, ErrNoMatchingSignature},
		{"stale", testEventBody, webhookHeader(testEventID, ts, valid), testWebhookSecret, testEventTime.Add(301 * time.Second), ErrTimestampTooOld},
		{"future", testEventBody, webhookHeader(testEventID, ts, valid), testWebhookSecret, testEventTime.Add(-301 * time.Second), ErrTimestampTooNew},
		{"non-integer timestamp", testEventBody, webhookHeader(testEventID, ts+".5", valid), testWebhookSecret, testEventTime, ErrInvalidTimestamp},
		{"huge timestamp", testEventBody, webhookHeader(testEventID, "9223372036854775807", valid), testWebhookSecret, testEventTime, ErrTimestampTooNew},
		{"tiny timestamp", testEventBody, webhookHeader(testEventID, "-9223372036854775808", valid), testWebhookSecret, testEventTime, ErrTimestampTooOld},
		{"empty headers", testEventBody, http.Header{}, testWebhookSecret, testEventTime, ErrMissingHeaders},
		{"nil headers", testEventBody, nil, testWebhookSecret, testEventTime, ErrMissingHeaders},
		{"missing signature", testEventBody, webhookHeader(testEventID, ts), testWebhookSecret, testEventTime, ErrMissingHeaders},
		{"blank signature", testEventBody, webhookHeader(testEventID, ts, "  "), testWebhookSecret, testEventTime, ErrMissingHeaders},
		{"missing event id", testEventBody, webhookHeader("", ts, valid), testWebhookSecret, testEventTime, ErrMissingHeaders},
		{"missing timestamp", testEventBody, webhookHeader(testEventID, "", valid), testWebhookSecret, testEventTime, ErrMissingHeaders},
		{"whsec_ prefixed secret", testEventBody, webhookHeader(testEventID, ts, valid), "whsec_" + testWebhookSecret, testEventTime, ErrInvalidSecret},
		{"other valid secret", testEventBody, webhookHeader(testEventID, ts, valid), "YWJj", testEventTime, ErrNoMatchingSignature},
		{"missing padding", testEventBody, webhookHeader(testEventID, ts, valid), "YWI", testEventTime, ErrInvalidSecret},
		{"empty secret", testEventBody, webhookHeader(testEventID, ts, valid), "", testEventTime, ErrInvalidSecret},
		{"embedded newline in secret", testEventBody, webhookHeader(testEventID, ts, valid), testWebhookSecret[:8] + "\n" + testWebhookSecret[8:], testEventTime, ErrInvalidSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.body, tc.h, tc.secret, tc.now)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if err != nil && !errors.Is(tc.want, ErrInvalidSecret) && !errors.Is(err, ErrWebhook) {
				t.Errorf("%v does not wrap ErrWebhook", err)
			}
		})
	}
}

func TestParseEvent(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       WebhookEvent
		wantRaw    string
		wantErr    bool
	}{
		{"account.updated, object auth method", string(testEventBody),
			WebhookEvent{EventType: "account.updated", ConnectionID: "conn-1", AccountID: "acc", CompanyID: "co",
				Data: WebhookData{Status: "reauth", AuthenticationMethod: "credential"}},
			`{"status":"reauth","authentication_method":{"type":"credential"}}`, false},
		{"account.updated, string auth method (2023 docs)",
			`{"event_type":"account.updated","connection_id":"c","data":{"status":"disconnected","authentication_method":"assisted"}}`,
			WebhookEvent{EventType: "account.updated", ConnectionID: "c", Data: WebhookData{Status: "disconnected", AuthenticationMethod: "assisted"}},
			`{"status":"disconnected","authentication_method":"assisted"}`, false},
		{"unknown type, entity, array data", `{"event_type":"job.something_new.completed","entity_id":"e","data":[1,2]}`,
			WebhookEvent{EventType: "job.something_new.completed", EntityID: "e"}, `[1,2]`, false},
		{"null data", `{"event_type":"company.updated","data":null}`, WebhookEvent{EventType: "company.updated"}, `null`, false},
		{"missing data", `{"event_type":"test"}`, WebhookEvent{EventType: "test"}, ``, false},
		{"odd field types", `{"event_type":7,"connection_id":{"a":1},"data":{"status":["x"],"authentication_method":{"type":3}}}`,
			WebhookEvent{EventType: "7", Data: WebhookData{AuthenticationMethod: "3"}}, `{"status":["x"],"authentication_method":{"type":3}}`, false},
		{"empty object", `{}`, WebhookEvent{}, ``, false},
		{"null body", `null`, WebhookEvent{}, ``, true},
		{"array body", `[]`, WebhookEvent{}, ``, true},
		{"string body", `"x"`, WebhookEvent{}, ``, true},
		{"empty body", ``, WebhookEvent{}, ``, true},
		{"truncated", `{"event_type":"account.updated"`, WebhookEvent{}, ``, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := ParseEvent([]byte(tc.body))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			raw := string(ev.Data.Raw)
			ev.Data.Raw = nil
			if ev.EventType != tc.want.EventType || ev.ConnectionID != tc.want.ConnectionID || ev.AccountID != tc.want.AccountID ||
				ev.CompanyID != tc.want.CompanyID || ev.EntityID != tc.want.EntityID || ev.Data.Status != tc.want.Data.Status || ev.Data.AuthenticationMethod != tc.want.Data.AuthenticationMethod {
				t.Errorf("event = %+v\nwant    %+v", *ev, tc.want)
			}
			if raw != tc.wantRaw {
				t.Errorf("raw = %q, want %q", raw, tc.wantRaw)
			}
		})
	}
}

// FuzzVerify checks that Verify never panics and accepts a delivery only if
// one of its v1 items is the HMAC, under the secret, of exactly the event id,
// timestamp and body presented, with a timestamp within tolerance.
func FuzzVerify(f *testing.F) {
	ts := strconv.FormatInt(testEventTime.Unix(), 10)
	now := testEventTime.Unix()
	valid := mustSign(f, testEventBody, testEventID, testEventTime, testWebhookSecret)
	oldKey := mustSign(f, testEventBody, testEventID, testEventTime, oldWebhookSecret)
	validSig := strings.TrimPrefix(valid, "v1,")

	// body, event id, timestamp header, signature value 1, signature value 2, now
	f.Add(testEventBody, testEventID, ts, valid, "", now)                                                         // valid
	f.Add(append([]byte(" "), testEventBody...), testEventID, ts, valid, "", now)                                 // tampered body
	f.Add(testEventBody, testEventID, strconv.FormatInt(now+1, 10), valid, "", now)                               // tampered timestamp
	f.Add(testEventBody, testEventID, ts, oldKey+" "+valid, "", now)                                              // rotated key
	f.Add(testEventBody, testEventID, ts, "v1,bm9wZQ==", valid, now)                                              // multiple header values
	f.Add(testEventBody, testEventID, ts, "v2,"+validSig, "", now)                                                // v2 only
	f.Add(testEventBody, testEventID, ts, valid, "", now+301)                                                     // stale
	f.Add(testEventBody, testEventID, ts, valid, "", now-301)                                                     // future
	f.Add(testEventBody, testEventID, ts, "v1,%%%not base64%%%", "v1,"+validSig[:10], now)                        // malformed base64
	f.Add(testEventBody, "", "", "", "", now)                                                                     // empty headers
	f.Add([]byte{}, testEventID, "+"+ts, "v1,"+expectedSig(testWebhookSecret, testEventID, "+"+ts, nil), "", now) // odd but signed timestamp

	f.Fuzz(func(t *testing.T, body []byte, eventID, tsHeader, sig1, sig2 string, nowUnix int64) {
		h := http.Header{}
		h["Finch-Event-Id"] = []string{eventID}
		h["Finch-Timestamp"] = []string{tsHeader}
		h["Finch-Signature"] = []string{sig1}
		if sig2 != "" {
			h["Finch-Signature"] = append(h["Finch-Signature"], sig2)
		}
		err := Verify(body, h, testWebhookSecret, time.Unix(nowUnix, 0))
		if err != nil {
			if !errors.Is(err, ErrWebhook) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		sec, perr := strconv.ParseInt(tsHeader, 10, 64)
		if eventID == "" || perr != nil || sec < nowUnix-300 || sec > nowUnix+300 {
			t.Fatalf("accepted id %q ts %q at now %d", eventID, tsHeader, nowUnix)
		}
		want := "v1," + expectedSig(testWebhookSecret, eventID, tsHeader, body)
		for _, item := range strings.Fields(sig1 + " " + sig2) {
			if item == want {
				return
			}
		}
		t.Fatalf("accepted a delivery not signed with the secret: id %q ts %q sigs %q %q body %q", eventID, tsHeader, sig1, sig2, body)
	})
}

// FuzzParseEvent checks that ParseEvent never panics and fails exactly when
// the body is not a JSON object.
func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{
		string(testEventBody),
		`{"event_type":"account.updated","connection_id":"c","data":{"status":"connected","authentication_method":"assisted"}}`,
		`{"event_type":"job.data_sync_all.completed","data":{"job_id":"j","job_url":"u"}}`,
		`{"event_type":"company.updated","data":null}`,
		`{"event_type":1,"data":"x"}`,
		`{"data":{"authentication_method":{"type":{"nested":true}}}}`,
		`{}`, `null`, `[]`, `"s"`, `1`, ``, `{"a":`, " \n{\"event_type\":\"test\"} ", `{"a":1} trailing`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := ParseEvent(body)
		isObject := json.Valid(body) && bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{"))
		if (err == nil) != isObject {
			t.Fatalf("ParseEvent(%q) err = %v, but is object = %v", body, err, isObject)
		}
		if err == nil && ev == nil {
			t.Fatal("nil event without error")
		}
	})
}
