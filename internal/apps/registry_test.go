package apps

import (
	"net/url"
	"testing"

	"k8s.io/apimachinery/pkg/types"
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
	st := a.SignState("sess_1")
	if id, ok := a.VerifyState(st); !ok || id != "sess_1" {
		t.Fatalf("VerifyState(%q) = %q, %v", st, id, ok)
	}
	other := &App{Key: typesNN("payroll", "other"), stateKey: a.stateKey}
	for _, bad := range []string{"", "sess_1", "sess_1.", st + "x", "sess_2" + st[len("sess_1"):], other.SignState("sess_1")} {
		if _, ok := a.VerifyState(bad); ok {
			t.Errorf("VerifyState(%q) accepted", bad)
		}
	}
	cb := a.CallbackURL()
	if got := a.PublishedConnectURL("https://connect.tryfinch.com/authorize?session=sess_1", "sess_1", cb); got != "https://connect.tryfinch.com/authorize?session=sess_1&state="+url.QueryEscape(st) {
		t.Errorf("published URL = %s", got)
	}
	if got := a.PublishedConnectURL("https://connect.tryfinch.com/authorize?session=sess_1", "sess_1", "https://elsewhere.example.com/cb"); got != "https://connect.tryfinch.com/authorize?session=sess_1" {
		t.Errorf("a foreign redirect URI must get no state, got %s", got)
	}
	if !a.CallbackPathMatches("seg") || a.CallbackPathMatches("Seg") || a.CallbackPathMatches("") {
		t.Error("CallbackPathMatches")
	}
	if got := WebhookURL("", typesNN("a", "b")); got != "" {
		t.Errorf("no publicURL must give no webhook URL, got %s", got)
	}
}

func typesNN(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
