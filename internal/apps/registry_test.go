package apps

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

func TestURLs(t *testing.T) {
	key := struct{ Namespace, Name string }{"payroll", "default"}
	if got := CallbackURL("https://finch.example.com/", typesNN(key.Namespace, key.Name), "p4th"); got != "https://finch.example.com/callback/payroll/default/p4th" {
		t.Errorf("callback URL = %s", got)
	}
	if got := CallbackURL("https://finch.example.com/", typesNN(key.Namespace, key.Name), ""); got != "" {
		t.Errorf("no path segment must give no callback URL, got %s", got)
	}
}

// The callback accepts only states the operator signed for the app, and the
// published Connect URL carries one only when the session redirects to the
// operator's own callback.
func TestSignedState(t *testing.T) {
	a := &App{Key: typesNN("payroll", "default"), stateKey: []byte("0123456789abcdef0123456789abcdef"), callbackPath: "seg"}
	a.Spec.PublicURL = "https://finch.example.com"
	exp := time.Unix(1900000000, 0)
	st := a.SignState("sess_1", exp)
	if got, ok := a.VerifyState(st); !ok || got.SessionID != "sess_1" || !got.Expires.Equal(exp) || got.Legacy() {
		t.Fatalf("VerifyState(%q) = %+v, %v", st, got, ok)
	}
	other := &App{Key: typesNN("payroll", "other"), stateKey: a.stateKey}
	later := strings.Replace(st, ".1900000000.", ".1900000001.", 1) // a longer life, same MAC
	for _, bad := range []string{"", "sess_1", "sess_1.", st + "x", "sess_2" + st[len("sess_1"):], other.SignState("sess_1", exp), later,
		"sess_1." + a.stateMAC("sess_1", "") /* no expiry */} {
		if _, ok := a.VerifyState(bad); ok {
			t.Errorf("VerifyState(%q) accepted", bad)
		}
	}
	cb := a.CallbackURL()
	if got := a.PublishedConnectURL("https://connect.tryfinch.com/authorize?session=sess_1", "sess_1", cb, exp); got != "https://connect.tryfinch.com/authorize?session=sess_1&state="+url.QueryEscape(st) {
		t.Errorf("published URL = %s", got)
	}
	if got := a.PublishedConnectURL("https://connect.tryfinch.com/authorize?session=sess_1", "sess_1", "https://elsewhere.example.com/cb", exp); got != "https://connect.tryfinch.com/authorize?session=sess_1" {
		t.Errorf("a foreign redirect URI must get no state, got %s", got)
	}
	if !a.CallbackPathMatches("seg") || a.CallbackPathMatches("Seg") || a.CallbackPathMatches("") {
		t.Error("CallbackPathMatches")
	}
	if got := WebhookURL("", typesNN("a", "b")); got != "" {
		t.Errorf("no publicURL must give no webhook URL, got %s", got)
	}
}

// States published before states carried an expiry (session ID and MAC) are
// still accepted, marked Legacy so the callback checks their session instead;
// a session ID with a dot in it is not mistaken for an expiry.
func TestLegacySignedState(t *testing.T) {
	a := &App{Key: typesNN("payroll", "default"), stateKey: []byte("0123456789abcdef0123456789abcdef")}
	for _, id := range []string{"sess_1", "sess.123"} {
		legacy := id + "." + a.legacyStateMAC(id)
		got, ok := a.VerifyState(legacy)
		if !ok || got.SessionID != id || !got.Legacy() {
			t.Errorf("VerifyState(legacy %q) = %+v, %v", legacy, got, ok)
		}
	}
	other := &App{Key: typesNN("payroll", "other"), stateKey: a.stateKey}
	if _, ok := a.VerifyState("sess_1." + other.legacyStateMAC("sess_1")); ok {
		t.Error("another app's legacy state accepted")
	}
}

func typesNN(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

// Every condition and Event about rejected credentials names the app and the
// Secret to fix in one wording, for a FinchApp and a ClusterFinchApp (whose
// Secret lives in the cluster resource namespace).
func TestCredentialsRejectedMessage(t *testing.T) {
	for _, c := range []struct {
		app  *App
		want string
	}{
		{&App{Key: types.NamespacedName{Namespace: "hr", Name: "default"}, SecretNamespace: "hr",
			Spec: finchv1.FinchAppSpec{CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "finch-credentials"}}},
			`Finch rejected the client credentials of FinchApp "default" (invalid_client): fix Secret hr/finch-credentials (the sandbox, development and production apps have different credentials)`},
		{&App{Key: types.NamespacedName{Name: "shared"}, SecretNamespace: "finch-system",
			Spec: finchv1.FinchAppSpec{CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "shared-credentials"}}},
			`Finch rejected the client credentials of ClusterFinchApp "shared" (invalid_client): fix Secret finch-system/shared-credentials (the sandbox, development and production apps have different credentials)`},
	} {
		if got := c.app.CredentialsRejectedMessage(); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}
