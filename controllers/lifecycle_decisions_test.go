package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/finch/finchfake"
	"github.com/connectops/finch-operator/internal/tokens"
)

// The lifecycle decisions as tables: every phase a connection can be in,
// times every class of answer Finch can give to the call that phase makes,
// with a fixed clock and a fake Finch. The envtest + simulator suite covers
// the same behaviour end to end; these tables pin each decision alone.
//
// Each row lists what the pass does in order: its Finch calls and, as
// "WriteIntent", a status write of a call's intent within the pass (the
// pass's final write is not listed). A call that must not run twice
// (Reauthenticate, Disconnect) comes right after a WriteIntent, at most once
// per pass; every row is checked for that (checkIntents).

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// answer is one class of Finch answer to the call under test.
type answer struct {
	name string
	err  error // nil: the phase's successful answer
}

var (
	answerOK       = answer{"ok", nil}
	answerRejected = answer{"400 rejected", &finch.Error{StatusCode: 400, Name: "invalid_request_error", Message: "products: unknown product"}}
	answerClient   = answer{"401 invalid_client", &finch.Error{StatusCode: 401, Name: "invalid_client_error", Message: "invalid client"}}
	answer429      = answer{"429 rate limited", &finch.Error{StatusCode: 429, Name: "rate_limit_error", RetryAfter: 30 * time.Second}}
	answer503      = answer{"503 unavailable", &finch.Error{StatusCode: 503, Name: "server_error", Message: "try again"}}
	answerNetwork  = answer{"network error", errors.New("dial tcp 10.0.0.1:443: connect: connection refused")}
	answerRevoked  = answer{"401 invalid token", &finch.Error{StatusCode: 401, Name: "invalid_token_error", Message: "invalid token"}}
	answerReauth   = answer{"401 reauthenticate_user", &finch.Error{StatusCode: 401, Name: "authentication_error", FinchCode: "reauthenticate_user", Message: "reauthenticate"}}

	// Every call can get these.
	commonAnswers = []answer{answerOK, answerRejected, answerClient, answer429, answer503, answerNetwork}
	// Only a call with the access token (introspect) can get these.
	tokenAnswers = []answer{answerRevoked, answerReauth}
)

// start is a connection's state before the pass.
type start struct {
	name  string
	call  string // the Finch call the phase makes
	token string // "" : no token Secret
	setup func(st *finchv1.FinchConnectionStatus)
	// introspection Finch returns for an ok introspect
	finchStatus string
	// what an ok answer leads to
	okPhase  finchv1.Phase
	okReady  string
	okStall  bool
	revoked  finchv1.Phase // phase after a revoked token (introspect only)
	revokedR string
}

func connectSession(issued time.Time) *finchv1.Session {
	return &finchv1.Session{ID: "sess_1", Kind: finchv1.SessionConnect, ConnectURL: "https://connect.tryfinch.com/authorize?session=sess_1",
		IssuedAt: metav1.Time{Time: issued}, ExpiresAt: metav1.Time{Time: issued.Add(14 * 24 * time.Hour)}}
}

func introspected(status string, ago time.Duration) func(st *finchv1.FinchConnectionStatus) {
	return func(st *finchv1.FinchConnectionStatus) {
		st.ConnectionID, st.TokenVersion = "conn_1", "7"
		st.ConnectionStatus = &finchv1.ConnectionStatus{Status: status}
		st.LastIntrospectionTime = &metav1.Time{Time: t0.Add(-ago)}
		st.GrantedProducts = []string{"company"}
	}
}

var starts = []start{
	{name: "Pending", call: "CreateSession", setup: func(*finchv1.FinchConnectionStatus) {},
		okPhase: finchv1.PhaseAwaitingConnect, okReady: finchv1.ReasonAwaitingEmployer},
	{name: "AwaitingConnect, session due for refresh", call: "CreateSession",
		setup: func(st *finchv1.FinchConnectionStatus) {
			st.Phase = finchv1.PhaseAwaitingConnect
			st.Session = connectSession(t0.Add(-14*24*time.Hour + 30*time.Minute)) // refreshed an hour before expiry
		},
		okPhase: finchv1.PhaseAwaitingConnect, okReady: finchv1.ReasonAwaitingEmployer},
	{name: "Connecting, pending at Finch", call: "Introspect", token: "tok", setup: func(st *finchv1.FinchConnectionStatus) {
		st.Phase = finchv1.PhaseConnecting
		introspected(finch.StatusPending, 20*time.Minute)(st)
	}, finchStatus: finch.StatusConnected, okPhase: finchv1.PhaseConnected, okReady: finchv1.ReasonConnected,
		revoked: finchv1.PhaseError, revokedR: finchv1.ReasonTokenRevoked},
	{name: "Connected, introspection due", call: "Introspect", token: "tok", setup: func(st *finchv1.FinchConnectionStatus) {
		st.Phase = finchv1.PhaseConnected
		introspected(finch.StatusConnected, 7*time.Hour)(st)
	}, finchStatus: finch.StatusConnected, okPhase: finchv1.PhaseConnected, okReady: finchv1.ReasonConnected,
		revoked: finchv1.PhaseError, revokedR: finchv1.ReasonTokenRevoked},
	{name: "Connected, Finch now reports error_permissions", call: "Introspect", token: "tok", setup: func(st *finchv1.FinchConnectionStatus) {
		st.Phase = finchv1.PhaseConnected
		introspected(finch.StatusConnected, 7*time.Hour)(st)
	}, finchStatus: finch.StatusErrorPermissions, okPhase: finchv1.PhaseError, okReady: finchv1.ReasonEmployerAction, okStall: true,
		revoked: finchv1.PhaseError, revokedR: finchv1.ReasonTokenRevoked},
	{name: "Connected, Finch now reports disconnected", call: "Introspect", token: "tok", setup: func(st *finchv1.FinchConnectionStatus) {
		st.Phase = finchv1.PhaseConnected
		introspected(finch.StatusConnected, 7*time.Hour)(st)
	}, finchStatus: finch.StatusDisconnected, okPhase: finchv1.PhaseDisconnected, okReady: finchv1.ReasonDisconnected, okStall: true,
		revoked: finchv1.PhaseError, revokedR: finchv1.ReasonTokenRevoked},
	{name: "ReauthRequired, session expired unused", call: "Reauthenticate", token: "tok", setup: func(st *finchv1.FinchConnectionStatus) {
		st.Phase = finchv1.PhaseReauthRequired
		introspected(finch.StatusReauth, time.Minute)(st)
		st.Session = &finchv1.Session{ID: "sess_r", Kind: finchv1.SessionReauthenticate, ReplacesTokenVersion: "7",
			IssuedAt: metav1.Time{Time: t0.Add(-15 * 24 * time.Hour)}, ExpiresAt: metav1.Time{Time: t0.Add(-24 * time.Hour)}}
	}, okPhase: finchv1.PhaseReauthRequired, okReady: finchv1.ReasonAwaitingEmployer},
	{name: "Error, employer must act", call: "Introspect", token: "tok", setup: func(st *finchv1.FinchConnectionStatus) {
		st.Phase = finchv1.PhaseError
		introspected(finch.StatusErrorPermissions, 7*time.Hour)(st)
	}, finchStatus: finch.StatusErrorPermissions, okPhase: finchv1.PhaseError, okReady: finchv1.ReasonEmployerAction, okStall: true,
		revoked: finchv1.PhaseError, revokedR: finchv1.ReasonTokenRevoked},
	{name: "Disconnected at Finch", call: "Introspect", token: "tok", setup: func(st *finchv1.FinchConnectionStatus) {
		st.Phase = finchv1.PhaseDisconnected
		introspected(finch.StatusDisconnected, 7*time.Hour)(st)
	}, finchStatus: finch.StatusDisconnected, okPhase: finchv1.PhaseDisconnected, okReady: finchv1.ReasonDisconnected, okStall: true,
		revoked: finchv1.PhaseDisconnected, revokedR: finchv1.ReasonDisconnected},
}

// fakeFinch answers the call under test with a; any other call succeeds.
func fakeFinch(call string, a answer, finchStatus string) *finchfake.API {
	errFor := func(name string) error {
		if name == call {
			return a.err
		}
		return nil
	}
	return &finchfake.API{
		CreateSessionFn: func(_ context.Context, req finch.SessionRequest) (*finch.SessionResponse, error) {
			if err := errFor("CreateSession"); err != nil {
				return nil, err
			}
			return &finch.SessionResponse{SessionID: "sess_1", ConnectURL: "https://connect.tryfinch.com/authorize?session=sess_1"}, nil
		},
		ReauthenticateFn: func(_ context.Context, req finch.ReauthRequest) (*finch.SessionResponse, error) {
			if err := errFor("Reauthenticate"); err != nil {
				return nil, err
			}
			return &finch.SessionResponse{SessionID: "sess_r2", ConnectURL: "https://connect.tryfinch.com/authorize?session=sess_r2"}, nil
		},
		IntrospectFn: func(_ context.Context, token string) (*finch.Introspection, error) {
			if err := errFor("Introspect"); err != nil {
				return nil, err
			}
			return &finch.Introspection{ConnectionID: "conn_1", ProviderID: "gusto", Products: []string{"company"},
				ConnectionStatus: finch.ConnectionStatus{Status: finchStatus}}, nil
		},
	}
}

type decision struct {
	phase   finchv1.Phase
	ready   string // Ready reason
	stalled bool
	retry   string        // status.retry.reason ("": none)
	calls   []string      // Finch calls and intent writes, in order
	minWait time.Duration // requeue bounds
	maxWait time.Duration
}

// expect is what a pass from st must decide when Finch answers a.
func expect(st start, a answer) decision {
	calls := []string{st.call}
	if nonIdempotent[st.call] {
		calls = []string{writeIntent, st.call}
	}
	same := st.setupPhase()
	switch a {
	case answerOK:
		d := decision{phase: st.okPhase, ready: st.okReady, stalled: st.okStall, calls: calls, minWait: time.Second, maxWait: 15 * 24 * time.Hour}
		if st.okStall {
			d.minWait, d.maxWait = 0, 0
		}
		return d
	case answerRejected:
		phase := same
		if phase == finchv1.PhasePending {
			phase = finchv1.PhaseError
		}
		return decision{phase: phase, ready: finchv1.ReasonFinchRejected, stalled: true, calls: calls}
	case answerClient:
		phase := same
		if phase == finchv1.PhasePending {
			phase = finchv1.PhaseError
		}
		return decision{phase: phase, ready: finchv1.ReasonInvalidCredentials, stalled: true, calls: calls}
	case answer429:
		return decision{phase: same, ready: st.readyBefore(), retry: finchv1.ReasonRateLimited, calls: calls, minWait: 30 * time.Second, maxWait: 31 * time.Second}
	case answer503, answerNetwork:
		return decision{phase: same, ready: st.readyBefore(), retry: finchv1.ReasonFinchUnavailable, calls: calls, minWait: 5 * time.Second, maxWait: 6 * time.Second}
	case answerRevoked:
		return decision{phase: st.revoked, ready: st.revokedR, stalled: true, calls: calls}
	case answerReauth:
		// Finch says reauth: the pass writes what introspection found and the
		// intent, then mints the reauthentication session.
		return decision{phase: finchv1.PhaseReauthRequired, ready: finchv1.ReasonAwaitingEmployer, calls: []string{"Introspect", writeIntent, "Reauthenticate"},
			minWait: 14 * 24 * time.Hour, maxWait: 15 * 24 * time.Hour}
	}
	panic("unknown answer " + a.name)
}

// writeIntent marks a status write of a call's intent within a pass.
const writeIntent = "WriteIntent"

// nonIdempotent are the Finch calls that need an intent before them.
var nonIdempotent = map[string]bool{"Reauthenticate": true, "Disconnect": true}

// recordPass makes s write intents into a log shared with fake's calls, and
// returns the pass's log: Finch calls and WriteIntent, in order. Each intent
// write must carry the intent of the call that follows it.
func recordPass(t *testing.T, fake *finchfake.API, s *syncState) func() []string {
	type write struct {
		at   int
		kind finchv1.PendingCallKind
	}
	var writes []write
	s.writeStatus = func(context.Context) error {
		pc := s.conn.Status.PendingCall
		if pc == nil {
			t.Error("a status write before a call must carry status.pendingCall")
			return nil
		}
		writes = append(writes, write{len(fake.Calls()), pc.Kind})
		return nil
	}
	return func() []string {
		calls := fake.Calls()
		var out []string
		for i := 0; i <= len(calls); i++ {
			for _, w := range writes {
				if w.at == i {
					out = append(out, writeIntent)
					if i < len(calls) && string(w.kind) != calls[i] {
						t.Errorf("intent %s written before call %s", w.kind, calls[i])
					}
				}
			}
			if i < len(calls) {
				out = append(out, calls[i])
			}
		}
		return out
	}
}

// checkIntents: at most one call that must not run twice per pass, right
// after its intent write.
func checkIntents(t *testing.T, log []string) {
	t.Helper()
	n := 0
	for i, c := range log {
		if !nonIdempotent[c] {
			continue
		}
		if n++; n > 1 {
			t.Errorf("pass %v makes more than one non-idempotent call", log)
		}
		if i == 0 || log[i-1] != writeIntent {
			t.Errorf("pass %v calls %s without writing its intent first", log, c)
		}
	}
}

func (st start) setupPhase() finchv1.Phase {
	s := &finchv1.FinchConnectionStatus{}
	st.setup(s)
	if s.Phase == "" {
		return finchv1.PhasePending
	}
	return s.Phase
}

// readyBefore is the Ready reason a transient failure leaves: none was set
// before the pass, so the first-pass placeholder.
func (st start) readyBefore() string { return finchv1.ReasonProgressing }

func TestLifecycleDecisions(t *testing.T) {
	for _, st := range starts {
		answers := commonAnswers
		if st.call == "Introspect" {
			answers = append(append([]answer{}, commonAnswers...), tokenAnswers...)
		}
		for _, a := range answers {
			t.Run(fmt.Sprintf("%s/%s", st.name, a.name), func(t *testing.T) {
				want := expect(st, a)
				fake := fakeFinch(st.call, a, st.finchStatus)
				r := &FinchConnectionReconciler{Now: func() time.Time { return t0 }}
				conn := &finchv1.FinchConnection{
					ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "payroll", Generation: 1, UID: "uid-1",
						CreationTimestamp: metav1.Time{Time: t0.Add(-30 * 24 * time.Hour)}, Finalizers: []string{Finalizer}},
					Spec: finchv1.FinchConnectionSpec{CustomerID: "acme-001", CustomerName: "Acme", Products: []finchv1.Product{"company"}},
				}
				st.setup(&conn.Status)
				orig := conn.DeepCopy()
				s := &syncState{conn: conn, now: t0, app: &apps.App{
					Key: types.NamespacedName{Namespace: "payroll", Name: "default"}, Client: fake,
					Spec: finchv1.FinchAppSpec{RedirectURI: "https://app.example.com/finch/callback"},
				}}
				if st.token != "" {
					s.token = tokens.State{Exists: true, Token: st.token, Version: "7", Owned: true}
				}
				log := recordPass(t, fake, s)
				out := r.run(context.Background(), s, r.decisions())
				res := r.summarize(context.Background(), orig, s, out)

				got := conn.Status
				if fmt.Sprint(log()) != fmt.Sprint(want.calls) {
					t.Errorf("pass = %v, want %v", log(), want.calls)
				}
				checkIntents(t, log())
				if got.PendingCall != nil {
					t.Errorf("status.pendingCall = %+v after Finch answered, want none (the answer replaces it)", got.PendingCall)
				}
				if got.Phase != want.phase {
					t.Errorf("phase = %s, want %s", got.Phase, want.phase)
				}
				ready := meta.FindStatusCondition(got.Conditions, finchv1.ConditionReady)
				if ready == nil || ready.Reason != want.ready {
					t.Errorf("Ready = %+v, want reason %s", ready, want.ready)
				}
				if isStalled := meta.IsStatusConditionTrue(got.Conditions, finchv1.ConditionStalled); isStalled != want.stalled {
					t.Errorf("Stalled = %v, want %v", isStalled, want.stalled)
				}
				switch {
				case want.retry == "" && got.Retry != nil:
					t.Errorf("status.retry = %+v, want none", got.Retry)
				case want.retry != "" && (got.Retry == nil || got.Retry.Reason != want.retry || got.Retry.Failures != 1):
					t.Errorf("status.retry = %+v, want the first failure with reason %s", got.Retry, want.retry)
				}
				if res.RequeueAfter < want.minWait || res.RequeueAfter > want.maxWait {
					t.Errorf("requeue after %s, want within [%s, %s]", res.RequeueAfter, want.minWait, want.maxWait)
				}
				if (a == answerClient) != s.app.CredentialsRejected() {
					t.Errorf("credentials rejected = %v after %s", s.app.CredentialsRejected(), a.name)
				}
				if want.retry != "" && got.ObservedGeneration != orig.Status.ObservedGeneration {
					t.Error("a transient failure must not claim the generation observed")
				}
				if want.retry == "" && got.ObservedGeneration != conn.Generation {
					t.Errorf("observedGeneration = %d, want %d", got.ObservedGeneration, conn.Generation)
				}
				if s.token.Token == "" && got.TokenSecretRef != nil {
					t.Error("no token: status must not name a token Secret")
				}
			})
		}
	}
}

// A pass decides nothing new while a persisted backoff runs, unless a
// request or a spec change arrives, and never calls Finch meanwhile.
func TestLifecycleBackoffAndRequests(t *testing.T) {
	cases := []struct {
		name      string
		mutate    func(*finchv1.FinchConnection)
		wantCalls int
	}{
		{"backoff running", func(*finchv1.FinchConnection) {}, 0},
		{"spec changed during backoff", func(c *finchv1.FinchConnection) { c.Generation = 2 }, 1},
		{"resync requested during backoff", func(c *finchv1.FinchConnection) {
			c.Annotations = map[string]string{finchv1.RequestedAtAnnotation: "now"}
		}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := fakeFinch("", answerOK, "")
			r := &FinchConnectionReconciler{Now: func() time.Time { return t0 }}
			conn := &finchv1.FinchConnection{ObjectMeta: metav1.ObjectMeta{Name: "acme", Generation: 1},
				Spec: finchv1.FinchConnectionSpec{CustomerID: "acme-001", CustomerName: "Acme", Products: []finchv1.Product{"company"}}}
			conn.Status.Retry = &finchv1.RetryStatus{Failures: 3, ObservedGeneration: 1, Reason: finchv1.ReasonFinchUnavailable,
				NextAttemptTime: metav1.Time{Time: t0.Add(time.Minute)}}
			tc.mutate(conn)
			orig := conn.DeepCopy()
			s := &syncState{conn: conn, now: t0, app: &apps.App{Client: fake, Spec: finchv1.FinchAppSpec{RedirectURI: "https://x/cb"}}}
			out := r.run(context.Background(), s, append([]step{r.takeRequests, r.waitBackoff}, r.decisions()...))
			res := r.summarize(context.Background(), orig, s, out)
			if got := len(fake.Calls()); got != tc.wantCalls {
				t.Fatalf("Finch calls = %v, want %d", fake.Calls(), tc.wantCalls)
			}
			if tc.wantCalls == 0 {
				if res.RequeueAfter != time.Minute {
					t.Errorf("requeue after %s, want the rest of the backoff (1m)", res.RequeueAfter)
				}
				if conn.Status.Retry.Failures != 3 || conn.Status.LastHandledReconcileAt != "" {
					t.Errorf("a deferred pass must leave the backoff and requests as they were: %+v", conn.Status)
				}
			} else if conn.Status.Retry != nil {
				t.Errorf("a successful pass clears the backoff, got %+v", conn.Status.Retry)
			}
		})
	}
}

// A connection Finch already has (connection_already_exists) but whose token
// is not here stays stalled without calling Finch again, until the user asks
// for a reauthentication session, which brings a new code and token.
func TestLifecycleExistingConnectionWithoutToken(t *testing.T) {
	for _, requested := range []bool{false, true} {
		t.Run(fmt.Sprintf("reauth requested %v", requested), func(t *testing.T) {
			fake := fakeFinch("", answerOK, "")
			r := &FinchConnectionReconciler{Now: func() time.Time { return t0 }}
			conn := &finchv1.FinchConnection{ObjectMeta: metav1.ObjectMeta{Name: "acme", Generation: 1},
				Spec: finchv1.FinchConnectionSpec{CustomerID: "acme-001", CustomerName: "Acme", Products: []finchv1.Product{"company"}}}
			conn.Status.Phase, conn.Status.ConnectionID = finchv1.PhaseError, "conn_1"
			setCondition(&conn.Status.Conditions, 1, finchv1.ConditionStalled, metav1.ConditionTrue, finchv1.ReasonConnectionExists, "Finch already has connection conn_1")
			if requested {
				conn.Annotations = map[string]string{finchv1.ReauthRequestedAtAnnotation: "now"}
			}
			orig := conn.DeepCopy()
			s := &syncState{conn: conn, now: t0, app: &apps.App{Client: fake, Spec: finchv1.FinchAppSpec{RedirectURI: "https://x/cb"}}}
			log := recordPass(t, fake, s)
			out := r.run(context.Background(), s, append([]step{r.takeRequests, r.waitBackoff}, r.decisions()...))
			r.summarize(context.Background(), orig, s, out)
			wantCalls, wantPhase := "[]", finchv1.PhaseError
			if requested {
				wantCalls, wantPhase = "[WriteIntent Reauthenticate]", finchv1.PhaseReauthRequired
			}
			if got := fmt.Sprint(log()); got != wantCalls {
				t.Errorf("pass = %s, want %s", got, wantCalls)
			}
			if conn.Status.Phase != wantPhase {
				t.Errorf("phase = %s, want %s", conn.Status.Phase, wantPhase)
			}
			if requested && (conn.Status.Session == nil || conn.Status.Session.Kind != finchv1.SessionReauthenticate) {
				t.Errorf("session = %+v, want a reauthentication session", conn.Status.Session)
			}
		})
	}
}

// A reauthentication intent found without its session: a call may have issued
// a session whose link was never recorded. The pass does not call again
// until that session would have expired, unless this process saw the call's
// result (a lost write: recorded now), the employer completed it (a new
// token), or the user asks for a new link.
func TestLifecycleReauthIntent(t *testing.T) {
	intent := func(started time.Duration) func(st *finchv1.FinchConnectionStatus) {
		return func(st *finchv1.FinchConnectionStatus) {
			st.Phase = finchv1.PhaseReauthRequired
			introspected(finch.StatusReauth, time.Minute)(st)
			pc := newIntent(finchv1.PendingReauthenticate, t0.Add(-started))
			pc.ExpiresAt = &metav1.Time{Time: pc.StartedAt.Add(14 * 24 * time.Hour)}
			pc.RedirectURI, pc.ReplacesTokenVersion = "https://app.example.com/finch/callback", "7"
			st.PendingCall = pc
		}
	}
	minted := &finchv1.Session{ID: "sess_first", Kind: finchv1.SessionReauthenticate, ConnectURL: "https://connect.tryfinch.com/authorize?session=sess_first",
		IssuedAt: metav1.Time{Time: t0.Add(-time.Hour)}, ExpiresAt: metav1.Time{Time: t0.Add(14*24*time.Hour - time.Hour)}, ReplacesTokenVersion: "7"}
	cases := []struct {
		name         string
		setup        func(st *finchv1.FinchConnectionStatus)
		tokenVersion string
		annotations  map[string]string
		memo         *callMemo // what this process saw of the call
		wantCalls    string
		wantPhase    finchv1.Phase
		wantReady    string
		wantSession  string        // status.session.id after the pass
		wantWait     time.Duration // requeue, give or take jitter
		jitter       time.Duration
	}{
		{name: "operator restarted: wait until the unrecorded session expires", setup: intent(time.Hour), tokenVersion: "7",
			wantCalls: "[]", wantPhase: finchv1.PhaseReauthRequired, wantReady: finchv1.ReasonReauthUnrecorded, wantWait: 14*24*time.Hour - time.Hour},
		{name: "same process, write lost after the call: its session is recorded, no call", setup: intent(time.Hour), tokenVersion: "7",
			memo:      &callMemo{sent: true, ok: true, session: minted},
			wantCalls: "[]", wantPhase: finchv1.PhaseReauthRequired, wantReady: finchv1.ReasonAwaitingEmployer, wantSession: "sess_first", wantWait: 14*24*time.Hour - time.Hour},
		{name: "same process, the call was never sent: issue it", setup: intent(time.Hour), tokenVersion: "7",
			memo:      &callMemo{},
			wantCalls: "[WriteIntent Reauthenticate]", wantPhase: finchv1.PhaseReauthRequired, wantReady: finchv1.ReasonAwaitingEmployer, wantSession: "sess_r2", wantWait: 14 * 24 * time.Hour},
		{name: "the unrecorded session would have expired: issue a new one", setup: intent(15 * 24 * time.Hour), tokenVersion: "7",
			wantCalls: "[WriteIntent Reauthenticate]", wantPhase: finchv1.PhaseReauthRequired, wantReady: finchv1.ReasonAwaitingEmployer, wantSession: "sess_r2", wantWait: 14 * 24 * time.Hour},
		{name: "reauthRequestedAt: the user asks for a new link", setup: intent(time.Hour), tokenVersion: "7",
			annotations: map[string]string{finchv1.ReauthRequestedAtAnnotation: "again"},
			wantCalls:   "[WriteIntent Reauthenticate]", wantPhase: finchv1.PhaseReauthRequired, wantReady: finchv1.ReasonAwaitingEmployer, wantSession: "sess_r2", wantWait: 14 * 24 * time.Hour},
		{name: "a new token: the employer completed the unrecorded session", setup: intent(time.Hour), tokenVersion: "8",
			wantCalls: "[Introspect]", wantPhase: finchv1.PhaseConnected, wantReady: finchv1.ReasonConnected, wantWait: 6 * time.Hour, jitter: time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := fakeFinch("", answerOK, finch.StatusConnected)
			r := &FinchConnectionReconciler{Now: func() time.Time { return t0 }}
			conn := &finchv1.FinchConnection{
				ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "payroll", Generation: 1, Annotations: tc.annotations, Finalizers: []string{Finalizer}},
				Spec:       finchv1.FinchConnectionSpec{CustomerID: "acme-001", CustomerName: "Acme", Products: []finchv1.Product{"company"}},
			}
			tc.setup(&conn.Status)
			if tc.memo != nil {
				r.remember(types.NamespacedName{Namespace: "payroll", Name: "acme"}, conn.Status.PendingCall, *tc.memo)
			}
			orig := conn.DeepCopy()
			s := &syncState{conn: conn, now: t0, app: &apps.App{Client: fake, Spec: finchv1.FinchAppSpec{RedirectURI: "https://app.example.com/finch/callback"}},
				token: tokens.State{Exists: true, Token: "tok", Version: tc.tokenVersion, Owned: true}}
			log := recordPass(t, fake, s)
			out := r.run(context.Background(), s, append([]step{r.takeRequests, r.waitBackoff}, r.decisions()...))
			res := r.summarize(context.Background(), orig, s, out)
			if got := fmt.Sprint(log()); got != tc.wantCalls {
				t.Errorf("pass = %s, want %s", got, tc.wantCalls)
			}
			checkIntents(t, log())
			got := conn.Status
			if got.Phase != tc.wantPhase {
				t.Errorf("phase = %s, want %s", got.Phase, tc.wantPhase)
			}
			ready := meta.FindStatusCondition(got.Conditions, finchv1.ConditionReady)
			if ready == nil || ready.Reason != tc.wantReady {
				t.Fatalf("Ready = %+v, want reason %s", ready, tc.wantReady)
			}
			if tc.wantReady == finchv1.ReasonReauthUnrecorded {
				for _, want := range []string{"may have been issued", got.PendingCall.ExpiresAt.UTC().Format(time.RFC3339), finchv1.ReauthRequestedAtAnnotation} {
					if !strings.Contains(ready.Message, want) {
						t.Errorf("Ready message %q does not say %q", ready.Message, want)
					}
				}
				if meta.IsStatusConditionTrue(got.Conditions, finchv1.ConditionStalled) {
					t.Error("waiting for the unrecorded session is not Stalled")
				}
			}
			sessionID := ""
			if got.Session != nil {
				sessionID = got.Session.ID
			}
			if sessionID != tc.wantSession {
				t.Errorf("session = %q, want %q", sessionID, tc.wantSession)
			}
			if (got.PendingCall != nil) != (tc.wantReady == finchv1.ReasonReauthUnrecorded) {
				t.Errorf("status.pendingCall = %+v: it stays only while the unrecorded session may be live", got.PendingCall)
			}
			if res.RequeueAfter < tc.wantWait-tc.jitter || res.RequeueAfter > tc.wantWait+2*time.Second {
				t.Errorf("requeue after %s, want %s", res.RequeueAfter, tc.wantWait)
			}
		})
	}
}
