package events

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/connectops/finch-operator/internal/testenv"
)

// TestRecorderOnARealAPIServer records Events the way the controllers do and
// reads them back: fields as kubectl shows them, a repeat counted as a series
// on the first Event, a different note a new Event, and a full queue
// dropping (and counting) instead of blocking.
func TestRecorderOnARealAPIServer(t *testing.T) {
	cfg := testenv.StartForTest(t)
	k8s, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// A namespace of its own: the API server records Events of its own in
	// "default".
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "recorder"}}); err != nil {
		t.Fatal(err)
	}
	obj := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "recorder", Name: "employer"}}
	if err := k8s.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}

	rec := &Recorder{Client: k8s, Scheme: testenv.Scheme, Controller: "finch-operator"}
	done := make(chan struct{})
	go func() { _ = rec.Start(ctx); close(done) }()

	Record(rec, obj, corev1.EventTypeNormal, "SessionCreated", "CreateSession", "created Connect session s-1")
	Record(rec, obj, corev1.EventTypeNormal, "SessionCreated", "CreateSession", "created Connect session s-1")
	Record(rec, obj, corev1.EventTypeWarning, "CodeRejected", "ExchangeCode", strings.Repeat("x", 2000))

	var got []eventsv1.Event
	waitFor(t, func() bool {
		list := &eventsv1.EventList{}
		if err := k8s.List(ctx, list, client.InNamespace("recorder")); err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, e := range list.Items {
			if e.Regarding.UID == obj.UID {
				got = append(got, e)
			}
		}
		if len(got) != 2 {
			return false
		}
		for _, e := range got {
			if e.Reason == "SessionCreated" && (e.Series == nil || e.Series.Count != 2) {
				return false
			}
		}
		return true
	})
	for _, e := range got {
		if e.Regarding.Kind != "ConfigMap" || e.Regarding.Name != "employer" || e.Regarding.UID != obj.UID {
			t.Errorf("regarding = %+v", e.Regarding)
		}
		if e.ReportingController != "finch-operator" || !strings.HasPrefix(e.ReportingInstance, "finch-operator-") {
			t.Errorf("reporting = %q / %q", e.ReportingController, e.ReportingInstance)
		}
		if e.Reason == "CodeRejected" && (len(e.Note) != MaxMessage || e.Type != corev1.EventTypeWarning || e.Action != "ExchangeCode") {
			t.Errorf("CodeRejected: note %d bytes, type %q, action %q", len(e.Note), e.Type, e.Action)
		}
	}

	// Writers stopped: the queue fills and further Events are dropped, not
	// waited for.
	cancel()
	<-done
	small := &Recorder{Client: k8s, Scheme: testenv.Scheme, Controller: "finch-operator", QueueSize: 3, SeriesSize: 2, MaxWait: 10 * time.Millisecond}
	start := time.Now()
	for i := range 10 {
		Record(small, obj, corev1.EventTypeNormal, "Test", "Test", fmt.Sprintf("event %d", i))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("10 Events with no writer took %v", d)
	}
	if small.Dropped() != 7 {
		t.Errorf("dropped = %d, want 7", small.Dropped())
	}
	// The inbound server's recorder never waits, even with a long MaxWait.
	patient := &Recorder{Client: k8s, Scheme: testenv.Scheme, Controller: "finch-operator", QueueSize: 1, MaxWait: time.Hour}
	start = time.Now()
	for i := range 3 {
		Record(patient.NonBlocking(), obj, corev1.EventTypeNormal, "Test", "Test", fmt.Sprintf("event %d", i))
	}
	if d := time.Since(start); d > time.Second || patient.Dropped() != 2 {
		t.Errorf("NonBlocking with a full queue: took %v, dropped %d (want at once, 2)", d, patient.Dropped())
	}
	if small.order.Len() > 2 || len(small.series) != small.order.Len() {
		t.Errorf("series remembered = %d/%d, want at most SeriesSize 2", small.order.Len(), len(small.series))
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
