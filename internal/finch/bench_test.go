package finch

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/connectops/finch-operator/internal/budget"
)

func BenchmarkCreateSession(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, sessionOK)
	}))
	defer srv.Close()
	c, err := New(Config{
		BaseURL: srv.URL, ClientID: "id", ClientSecret: "secret", MetricsApp: types.NamespacedName{Namespace: "bench", Name: "app"},
		Limiter: budget.Gate{Budget: budget.New(budget.Config{Requests: 1 << 30, Window: time.Millisecond})},
	})
	if err != nil {
		b.Fatal(err)
	}
	req := SessionRequest{
		CustomerID: "cust-1", CustomerName: "Acme", Products: []string{"company", "directory", "individual"},
		MinutesToExpire: ptr(20160), RedirectURI: ptr("https://op.example/callback/ns/app"),
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.CreateSession(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	ts := strconv.FormatInt(testEventTime.Unix(), 10)
	sig := mustSign(b, testEventBody, testEventID, testEventTime, testWebhookSecret)
	old := mustSign(b, testEventBody, testEventID, testEventTime, oldWebhookSecret)
	h := webhookHeader(testEventID, ts, old+" "+sig)
	b.ReportAllocs()
	for b.Loop() {
		if err := Verify(testEventBody, h, testWebhookSecret, testEventTime); err != nil {
			b.Fatal(err)
		}
	}
}
