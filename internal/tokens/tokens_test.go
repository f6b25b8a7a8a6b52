package tokens

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/testenv"
)

// What a Secret says as a connection's token Secret, and whether the
// operator may write it: only a Secret it owns or that is labelled for the
// connection (a migrated one), never another workload's.
func TestStateOf(t *testing.T) {
	conn := &finchv1.FinchConnection{ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "hr", UID: "uid-acme"}}
	conn.SetGroupVersionKind(finchv1.GroupVersion.WithKind("FinchConnection"))
	controlled := func(uid types.UID) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: finchv1.GroupVersion.String(), Kind: "FinchConnection", Name: "acme", UID: uid, Controller: ptr.To(true)}}
	}
	for _, c := range []struct {
		name                      string
		sec                       corev1.Secret
		owned, labelled, writable bool
	}{
		{"owned", corev1.Secret{ObjectMeta: metav1.ObjectMeta{OwnerReferences: controlled("uid-acme")}}, true, false, true},
		{"labelled (migrated)", corev1.Secret{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{finchv1.ConnectionLabel: "acme"}}}, false, true, true},
		{"another workload's", corev1.Secret{}, false, false, false},
		{"labelled for another connection", corev1.Secret{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{finchv1.ConnectionLabel: "other"}}}, false, false, false},
		{"owned by an earlier connection of the same name", corev1.Secret{ObjectMeta: metav1.ObjectMeta{OwnerReferences: controlled("uid-old")}}, false, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.sec.ResourceVersion = "7"
			c.sec.Data = map[string][]byte{finchv1.AccessTokenKey: []byte("tok")}
			c.sec.Annotations = map[string]string{finchv1.TokenCodeSecretUIDAnnotation: "code-uid", finchv1.TokenSessionIDAnnotation: "sess_1"}
			st := StateOf(&c.sec, conn)
			if !st.Exists || st.Token != "tok" || st.Version != "7" || st.CodeUID != "code-uid" || st.SessionID != "sess_1" {
				t.Errorf("state %+v", st)
			}
			if st.Owned != c.owned || st.Labelled != c.labelled || st.Writable() != c.writable {
				t.Errorf("owned %v labelled %v writable %v, want %v %v %v", st.Owned, st.Labelled, st.Writable(), c.owned, c.labelled, c.writable)
			}
		})
	}
	if !(State{}).Writable() {
		t.Error("a token Secret that does not exist yet must be writable")
	}
}

// Which Secret holds which Finch connection, and which session a token came
// from: by the operator's annotations, or by the connection_id key of a
// Secret written elsewhere; an empty ID matches nothing.
func TestHoldsConnectionAndFromSession(t *testing.T) {
	annotated := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
		finchv1.TokenConnectionIDAnnotation: "conn_1", finchv1.TokenSessionIDAnnotation: "sess_1"}}}
	keyed := &corev1.Secret{Data: map[string][]byte{finchv1.ConnectionIDKey: []byte("conn_2")}}
	empty := &corev1.Secret{}
	for _, c := range []struct {
		name string
		sec  *corev1.Secret
		id   string
		want bool
	}{
		{"annotation", annotated, "conn_1", true},
		{"annotation, other connection", annotated, "conn_2", false},
		{"data key", keyed, "conn_2", true},
		{"empty ID", empty, "", false},
	} {
		if got := HoldsConnection(c.sec, c.id); got != c.want {
			t.Errorf("HoldsConnection %s: %v, want %v", c.name, got, c.want)
		}
	}
	if !FromSession(annotated, "sess_1") || FromSession(annotated, "sess_2") || FromSession(empty, "") {
		t.Error("FromSession matches the session annotation only, and never an empty ID")
	}
}

// The token Secret contract on a real API server: how Store writes it, when
// it refuses, how Reader finds it through the label-filtered cache (and past
// it, for migrated Secrets), which code Secrets count, and how a webhook is
// recorded.
func TestSecretContractOnARealAPIServer(t *testing.T) {
	cfg := testenv.StartForTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	api, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	// The label-filtered cache Reader.Cached is, keeping the data of the
	// operator's own Secret types only (as internal/operator's cache does).
	hasConn, _ := labels.NewRequirement(finchv1.ConnectionLabel, selection.Exists, nil)
	cached, err := cache.New(cfg, cache.Options{Scheme: testenv.Scheme,
		ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: {Label: labels.NewSelector().Add(*hasConn)}},
		DefaultTransform: func(in any) (any, error) {
			if s, ok := in.(*corev1.Secret); ok && s.Type != finchv1.TokenSecretType && s.Type != finchv1.CodeSecretType {
				s.Data = nil
			}
			return in, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cached.Start(ctx) }()
	reader := Reader{Cached: cached, Metadata: api, API: api}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hr"}}
	if err := api.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	newConn := func(name string) *finchv1.FinchConnection {
		t.Helper()
		c := &finchv1.FinchConnection{ObjectMeta: metav1.ObjectMeta{Namespace: "hr", Name: name},
			Spec: finchv1.FinchConnectionSpec{CustomerID: name, CustomerName: name, Products: []finchv1.Product{"company"}}}
		if err := api.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	secret := func(c *finchv1.FinchConnection) *corev1.Secret {
		t.Helper()
		sec := &corev1.Secret{}
		if err := api.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: c.TokenSecretName()}, sec); err != nil {
			t.Fatal(err)
		}
		return sec
	}
	// token polls Reader.Token until it reports a Secret whose access token is want.
	token := func(c *finchv1.FinchConnection, want string) State {
		t.Helper()
		var st State
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			var err error
			st, err = reader.Token(ctx, c)
			return err == nil && st.Exists && st.Token == want, nil
		})
		if err != nil {
			t.Fatalf("Reader.Token(%s): %+v, want token %q", c.Name, st, want)
		}
		return st
	}

	t.Run("Store creates an owned, labelled token Secret", func(t *testing.T) {
		conn := newConn("acme")
		if st, err := reader.Token(ctx, conn); err != nil || st.Exists || !st.Writable() {
			t.Fatalf("before Store: %+v, %v", st, err)
		}
		// Counted per namespace and app of the connection (its default FinchApp), never per connection.
		before := testutil.ToFloat64(stored.WithLabelValues("hr", "FinchApp/default", "embedded"))
		tok := &finch.TokenResponse{AccessToken: "tok_1", ConnectionID: "conn_1", CustomerID: "acme"}
		if err := Store(ctx, api, api, conn, tok, Source{Flow: "embedded", CodeSecretUID: "code-uid", SessionID: "sess_1"}); err != nil {
			t.Fatal(err)
		}
		sec := secret(conn)
		if sec.Type != finchv1.TokenSecretType || !metav1.IsControlledBy(sec, conn) || sec.Labels[finchv1.ConnectionLabel] != "acme" {
			t.Errorf("type %q, owners %v, labels %v", sec.Type, sec.OwnerReferences, sec.Labels)
		}
		if string(sec.Data[finchv1.AccessTokenKey]) != "tok_1" || string(sec.Data[finchv1.ConnectionIDKey]) != "conn_1" {
			t.Errorf("data keys %v", sec.Data)
		}
		for k, want := range map[string]string{finchv1.TokenConnectionIDAnnotation: "conn_1", finchv1.TokenCustomerIDAnnotation: "acme",
			finchv1.TokenSessionIDAnnotation: "sess_1", finchv1.TokenCodeSecretUIDAnnotation: "code-uid"} {
			if sec.Annotations[k] != want {
				t.Errorf("annotation %s = %q, want %q", k, sec.Annotations[k], want)
			}
		}
		if got := testutil.ToFloat64(stored.WithLabelValues("hr", "FinchApp/default", "embedded")) - before; got != 1 {
			t.Errorf("finch_tokens_stored_total{namespace=hr,app=FinchApp/default,flow=embedded} grew by %v, want 1", got)
		}
		st := token(conn, "tok_1")
		if !st.Owned || !st.Labelled || st.CodeUID != "code-uid" || st.SessionID != "sess_1" {
			t.Errorf("Reader.Token: %+v", st)
		}

		// A second token (a reauthentication through the callback) replaces
		// the first in the same Secret and drops the stale code Secret UID.
		uid := sec.UID
		if err := Store(ctx, api, api, conn, &finch.TokenResponse{AccessToken: "tok_2", ConnectionID: "conn_1"}, Source{Flow: "redirect", SessionID: "sess_2"}); err != nil {
			t.Fatal(err)
		}
		sec = secret(conn)
		if sec.UID != uid || string(sec.Data[finchv1.AccessTokenKey]) != "tok_2" || sec.Annotations[finchv1.TokenSessionIDAnnotation] != "sess_2" {
			t.Errorf("after the second Store: uid %s (was %s), data %v, annotations %v", sec.UID, uid, sec.Data, sec.Annotations)
		}
		if _, ok := sec.Annotations[finchv1.TokenCodeSecretUIDAnnotation]; ok {
			t.Error("the code Secret UID of the first token survived a token from the callback")
		}
	})

	t.Run("Store refuses another workload's Secret of the same name", func(t *testing.T) {
		conn := newConn("globex")
		other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "hr", Name: conn.TokenSecretName()},
			Data: map[string][]byte{finchv1.AccessTokenKey: []byte("theirs")}}
		if err := api.Create(ctx, other); err != nil {
			t.Fatal(err)
		}
		// Not in the label-filtered cache: Reader finds it through the
		// metadata of every Secret, and says the operator may not write it.
		st := token(conn, "theirs")
		if st.Writable() {
			t.Errorf("another workload's Secret reads as writable: %+v", st)
		}
		err := Store(ctx, api, api, conn, &finch.TokenResponse{AccessToken: "ours", ConnectionID: "conn_g"}, Source{Flow: "redirect"})
		if !errors.Is(err, ErrNotOwned) {
			t.Fatalf("Store: %v, want ErrNotOwned", err)
		}
		if got := string(secret(conn).Data[finchv1.AccessTokenKey]); got != "theirs" {
			t.Errorf("the other workload's token became %q", got)
		}
	})

	t.Run("Store writes a migrated Secret labelled for the connection, keeping its type", func(t *testing.T) {
		conn := newConn("initech")
		migrated := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "hr", Name: conn.TokenSecretName(),
			Labels: map[string]string{finchv1.ConnectionLabel: "initech"}}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{finchv1.AccessTokenKey: []byte("old"), "extra": []byte("kept")}}
		if err := api.Create(ctx, migrated); err != nil {
			t.Fatal(err)
		}
		if err := Store(ctx, api, api, conn, &finch.TokenResponse{AccessToken: "new", ConnectionID: "conn_i"}, Source{Flow: "redirect"}); err != nil {
			t.Fatal(err)
		}
		sec := secret(conn)
		if sec.Type != corev1.SecretTypeOpaque || string(sec.Data["extra"]) != "kept" || metav1.IsControlledBy(sec, conn) {
			t.Errorf("migrated Secret: type %q, data %v, owners %v", sec.Type, sec.Data, sec.OwnerReferences)
		}
		// The cache holds only its metadata (not of the token type): Reader
		// reads the token from the API server.
		if st := token(conn, "new"); !st.Labelled || st.Owned || !st.Writable() {
			t.Errorf("Reader.Token: %+v", st)
		}
	})

	t.Run("CodeSecrets lists the connection's live code Secrets, oldest first", func(t *testing.T) {
		conn := newConn("umbrella")
		code := func(name, connection string, typ corev1.SecretType, finalizers ...string) *corev1.Secret {
			t.Helper()
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "hr", Name: name, Finalizers: finalizers,
				Labels: map[string]string{finchv1.ConnectionLabel: connection}}, Type: typ,
				Data: map[string][]byte{finchv1.CodeKey: []byte("code")}}
			if err := api.Create(ctx, s); err != nil {
				t.Fatal(err)
			}
			return s
		}
		first := code("umbrella-code-b", "umbrella", finchv1.CodeSecretType)
		// Creation timestamps have whole seconds: the second one is created
		// in a later second than the first.
		for !time.Now().Truncate(time.Second).After(first.CreationTimestamp.Time) {
			time.Sleep(20 * time.Millisecond)
		}
		code("umbrella-code-a", "umbrella", finchv1.CodeSecretType)
		code("umbrella-opaque", "umbrella", corev1.SecretTypeOpaque)
		code("other-code", "other", finchv1.CodeSecretType)
		deleting := code("umbrella-code-deleting", "umbrella", finchv1.CodeSecretType, "test.finch.connectops.dev/hold")
		if err := api.Delete(ctx, deleting); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			deleting.Finalizers = nil
			_ = api.Update(context.Background(), deleting)
		})
		var names []string
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			list, err := reader.CodeSecrets(ctx, conn)
			if err != nil {
				return false, err
			}
			names = names[:0]
			for _, s := range list {
				names = append(names, s.Name)
			}
			// The deleting one is in the cache once its deletion is.
			sec := &corev1.Secret{}
			if err := cached.Get(ctx, client.ObjectKeyFromObject(deleting), sec); err != nil || sec.DeletionTimestamp == nil {
				return false, nil
			}
			return len(names) == 2, nil
		})
		if err != nil || names[0] != "umbrella-code-b" || names[1] != "umbrella-code-a" {
			t.Errorf("CodeSecrets: %v (%v), want [umbrella-code-b umbrella-code-a] (by creation, not by name)", names, err)
		}
	})

	t.Run("RecordWebhook sets the two annotations, keeping the others and the spec", func(t *testing.T) {
		conn := newConn("hooli")
		conn.Annotations = map[string]string{"team": "payroll"}
		if err := api.Update(ctx, conn); err != nil {
			t.Fatal(err)
		}
		gen := conn.Generation
		if err := RecordWebhook(ctx, api, conn.DeepCopy(), "msg_1", "reauth"); err != nil {
			t.Fatal(err)
		}
		got := &finchv1.FinchConnection{}
		if err := api.Get(ctx, client.ObjectKeyFromObject(conn), got); err != nil {
			t.Fatal(err)
		}
		a := got.Annotations
		if a[finchv1.WebhookEventAnnotation] != "msg_1" || a[finchv1.WebhookStatusAnnotation] != "reauth" || a["team"] != "payroll" || got.Generation != gen {
			t.Errorf("annotations %v, generation %d (was %d)", a, got.Generation, gen)
		}
		if meta.FindStatusCondition(got.Status.Conditions, finchv1.ConditionReady) != nil {
			t.Error("recording a webhook wrote status")
		}
	})
}
