package controllers

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

func TestPhaseForStatus(t *testing.T) {
	cases := map[string]finchv1.Phase{
		"connected":              finchv1.PhaseConnected,
		"pending":                finchv1.PhaseConnecting,
		"processing":             finchv1.PhaseConnecting,
		"reauth":                 finchv1.PhaseReauthRequired,
		"error_permissions":      finchv1.PhaseError,
		"error_no_account_setup": finchv1.PhaseError,
		"disconnected":           finchv1.PhaseDisconnected,
		"brand_new_status":       finchv1.PhaseError, // kept verbatim, never a crash
	}
	for status, want := range cases {
		if got := phaseForStatus(&finchv1.ConnectionStatus{Status: status}); got != want {
			t.Errorf("phaseForStatus(%q) = %s, want %s", status, got, want)
		}
	}
	if isKnownStatus("brand_new_status") {
		t.Error("an unknown status must be reported as unknown")
	}
}

func TestRefreshTimeAndJitter(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sess := &finchv1.Session{IssuedAt: metav1.Time{Time: issued}, ExpiresAt: metav1.Time{Time: issued.Add(14 * 24 * time.Hour)}}
	if got, want := refreshTime(sess), sess.ExpiresAt.Add(-time.Hour); !got.Equal(want) {
		t.Errorf("14-day session refreshes at %s, want an hour before expiry %s", got, want)
	}
	short := &finchv1.Session{IssuedAt: metav1.Time{Time: issued}, ExpiresAt: metav1.Time{Time: issued.Add(10 * time.Minute)}}
	if got, want := refreshTime(short), short.ExpiresAt.Add(-time.Minute); !got.Equal(want) {
		t.Errorf("10-minute session refreshes at %s, want a tenth before expiry %s", got, want)
	}
	for _, d := range []time.Duration{-time.Hour, 0, time.Millisecond, time.Minute, 30 * 24 * time.Hour} {
		for i := 0; i < 100; i++ {
			j := jitterDown(d)
			if j <= 0 || (d > time.Second && (j > d || j < d-d/20)) {
				t.Fatalf("jitterDown(%s) = %s: must be positive, at most d and at least 95%% of it", d, j)
			}
		}
	}
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	r := &FinchConnectionReconciler{RetryBase: time.Second}
	prev := time.Duration(0)
	for n := int32(1); n <= 20; n++ {
		d := r.backoff(n)
		if d < prev*9/10 && d < retryMax {
			t.Fatalf("backoff(%d) = %s shrank from %s", n, d, prev)
		}
		if d > retryMax+retryMax/5 {
			t.Fatalf("backoff(%d) = %s exceeds the cap %s (+20%% jitter)", n, d, retryMax)
		}
		prev = d
	}
}

func TestOlderVersion(t *testing.T) {
	if !olderVersion("99", "100") || olderVersion("100", "100") || olderVersion("101", "100") {
		t.Error("numeric resourceVersions must compare numerically")
	}
	if olderVersion("abc", "100") {
		t.Error("an opaque resourceVersion is never treated as older")
	}
}

func TestRequestHashChangesWithSessionParameters(t *testing.T) {
	conn := &finchv1.FinchConnection{Spec: finchv1.FinchConnectionSpec{CustomerID: "c", CustomerName: "C", Products: []finchv1.Product{"company"}}}
	a := requestHash(sessionRequest(conn, "https://x/cb"))
	conn.Spec.DeletionPolicy = finchv1.DeletionPolicyDisconnect // not sent to Finch
	if b := requestHash(sessionRequest(conn, "https://x/cb")); a != b {
		t.Error("a field Finch never sees must not refresh the session")
	}
	conn.Spec.CustomerName = "C2"
	if b := requestHash(sessionRequest(conn, "https://x/cb")); a == b {
		t.Error("a changed customer name must refresh the session")
	}
	if b := requestHash(sessionRequest(conn, "https://y/cb")); a == b {
		t.Error("a changed redirect URI must refresh the session")
	}
}

// A pass follows the manager's cancellation until it commits to a call that
// must not be cut short (a code exchange, a reauthentication intent); from
// then on it finishes, so a rolling upgrade does not lose a token or strand
// an intent.
func TestCommittablePassOutlivesShutdown(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	ctx, _, cancel := committable(parent)
	stop()
	<-ctx.Done() // not committed: stops with the manager
	cancel()

	parent, stop = context.WithCancel(context.Background())
	ctx, commit, cancel := committable(parent)
	commit()
	stop()
	stillRunning(t, ctx, "a committed pass was cancelled with the manager")
	cancel()
	if ctx.Err() == nil {
		t.Fatal("cancel did not release the pass's context")
	}

	// recordIntent commits the pass before writing the intent.
	parent, stop = context.WithCancel(context.Background())
	defer stop()
	ctx, commit, cancel = committable(parent)
	defer cancel()
	s := &syncState{conn: &finchv1.FinchConnection{}, commit: commit, writeStatus: func(context.Context) error { stop(); return nil }}
	r := &FinchConnectionReconciler{}
	if err := r.recordIntent(ctx, s, newIntent(finchv1.PendingReauthenticate, time.Now())); err != nil {
		t.Fatal(err)
	}
	stillRunning(t, ctx, "the manager stopping right after the intent write cancelled the Finch call")
}

// stillRunning asserts ctx stays uncancelled for a while. The cancellation it
// guards against runs in context.AfterFunc's own goroutine, which a busy
// machine may start late: the window is long enough for it to have run
// (the uncommitted case above is cancelled within it).
func stillRunning(t *testing.T, ctx context.Context, msg string) {
	t.Helper()
	select {
	case <-ctx.Done():
		t.Fatalf("%s: %v", msg, ctx.Err())
	case <-time.After(500 * time.Millisecond):
	}
}
