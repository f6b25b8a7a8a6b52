package argocd_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// argoDir holds the scripts under test: this folder.
const argoDir = "."

func readScript(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(argoDir, name))
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return string(data)
}

// toUnstructured converts a typed object the way the API server hands it to
// Argo CD: unstructured content with int64 numbers.
func toUnstructured(t *testing.T, obj runtime.Object) map[string]any {
	t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var now = metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))

func cond(typ string, status metav1.ConditionStatus, reason, message string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message, LastTransitionTime: now, ObservedGeneration: 1}
}

func connection(generation, observed int64, suspend bool, conds ...metav1.Condition) *finchv1.FinchConnection {
	c := &finchv1.FinchConnection{
		TypeMeta:   metav1.TypeMeta{APIVersion: finchv1.GroupVersion.String(), Kind: "FinchConnection"},
		ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "hr", Generation: generation, CreationTimestamp: now},
		Spec: finchv1.FinchConnectionSpec{
			CustomerID: "acme", CustomerName: "Acme", Products: []finchv1.Product{"company", "directory"}, Suspend: suspend,
		},
	}
	c.Status.ObservedGeneration = observed
	c.Status.Conditions = conds
	return c
}

const awaitingMsg = "Send the employer the Connect URL in status.session.connectURL; it expires at 2026-01-16T03:04:05Z"

func TestFinchConnectionHealth(t *testing.T) {
	script := readScript(t, "finchconnection-health.lua")
	awaiting := []metav1.Condition{
		cond("Ready", metav1.ConditionTrue, "AwaitingEmployer", awaitingMsg),
		cond("Reconciling", metav1.ConditionFalse, "AwaitingEmployer", ""),
		cond("Stalled", metav1.ConditionFalse, "AwaitingEmployer", ""),
		cond("Connected", metav1.ConditionFalse, "AwaitingEmployer", "The employer has not completed Finch Connect"),
	}
	connected := []metav1.Condition{
		cond("Ready", metav1.ConditionTrue, "Connected", "Finch reports the connection connected"),
		cond("Reconciling", metav1.ConditionFalse, "Connected", ""),
		cond("Stalled", metav1.ConditionFalse, "Connected", ""),
		cond("Connected", metav1.ConditionTrue, "Connected", "Finch reports the connection connected"),
	}
	stalled := []metav1.Condition{
		cond("Ready", metav1.ConditionFalse, "InvalidCredentials", "Finch rejected the client credentials"),
		cond("Reconciling", metav1.ConditionFalse, "InvalidCredentials", ""),
		cond("Stalled", metav1.ConditionTrue, "InvalidCredentials", "Finch rejected the client credentials in Secret hr/finch-credentials; fix client_id and client_secret"),
		cond("Connected", metav1.ConditionFalse, "InvalidCredentials", ""),
	}
	connectedButStalled := append([]metav1.Condition{}, connected...)
	connectedButStalled[2] = cond("Stalled", metav1.ConditionTrue, "AppNotReady", "FinchApp hr/default is not Ready")
	firstPass := []metav1.Condition{
		cond("Ready", metav1.ConditionUnknown, "Reconciling", "Creating a Finch Connect session"),
		cond("Reconciling", metav1.ConditionTrue, "Reconciling", "Creating a Finch Connect session"),
	}
	reauth := []metav1.Condition{
		cond("Ready", metav1.ConditionTrue, "AwaitingEmployer", "The employer must re-authenticate: send the Connect URL in status.session.connectURL"),
		cond("Stalled", metav1.ConditionFalse, "ReauthRequired", ""),
		cond("Connected", metav1.ConditionFalse, "ReauthRequired", "Finch reports reauth"),
		cond("ReauthRequired", metav1.ConditionTrue, "ReauthRequired", "Finch reports reauth"),
	}
	retrying := []metav1.Condition{
		cond("Ready", metav1.ConditionFalse, "FinchUnavailable", ""),
		cond("Reconciling", metav1.ConditionTrue, "FinchUnavailable", "Finch answered 503; retrying at 2026-01-02T03:05:05Z"),
		cond("Stalled", metav1.ConditionFalse, "FinchUnavailable", ""),
	}

	tests := []struct {
		name        string
		obj         *finchv1.FinchConnection
		status      string
		message     string // exact
		msgContains string
	}{
		{name: "no status", obj: connection(1, 0, false), status: Progressing, message: "Waiting for the operator"},
		{name: "first pass, observedGeneration not yet set", obj: connection(1, 0, false, firstPass...),
			status: Progressing, message: "Waiting for the operator"},
		{name: "awaiting employer (Ready=True, Connected=False)", obj: connection(1, 1, false, awaiting...),
			status: Progressing, message: "AwaitingEmployer: " + awaitingMsg},
		{name: "connected", obj: connection(2, 2, false, connected...),
			status: Healthy, message: "Connected: Finch reports the connection connected"},
		{name: "stalled", obj: connection(1, 1, false, stalled...), status: Degraded,
			message: "Finch rejected the client credentials in Secret hr/finch-credentials; fix client_id and client_secret"},
		{name: "stalled wins over connected", obj: connection(1, 1, false, connectedButStalled...),
			status: Degraded, message: "FinchApp hr/default is not Ready"},
		{name: "suspended", obj: connection(3, 3, true, connected...), status: Suspended, msgContains: "spec.suspend"},
		{name: "suspended before the operator saw it", obj: connection(4, 3, true, connected...), status: Suspended, msgContains: "spec.suspend"},
		{name: "stale observedGeneration hides an old Connected", obj: connection(3, 2, false, connected...),
			status: Progressing, message: "Waiting for the operator"},
		{name: "stale observedGeneration hides an old Stalled", obj: connection(3, 2, false, stalled...),
			status: Progressing, message: "Waiting for the operator"},
		{name: "reauthentication required", obj: connection(1, 1, false, reauth...), status: Progressing,
			message: "AwaitingEmployer: The employer must re-authenticate: send the Connect URL in status.session.connectURL"},
		{name: "retrying a Finch outage", obj: connection(1, 1, false, retrying...), status: Progressing,
			message: "FinchUnavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runHealth(script, toUnstructured(t, tc.obj))
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tc.status {
				t.Errorf("status = %q (message %q), want %q", got.Status, got.Message, tc.status)
			}
			if tc.message != "" && got.Message != tc.message {
				t.Errorf("message = %q, want %q", got.Message, tc.message)
			}
			if tc.msgContains != "" && !strings.Contains(got.Message, tc.msgContains) {
				t.Errorf("message = %q, want it to contain %q", got.Message, tc.msgContains)
			}
		})
	}
}

func TestFinchConnectionHealthFromJSON(t *testing.T) {
	// Objects decoded from JSON carry float64 numbers and may lack any field.
	script := readScript(t, "finchconnection-health.lua")
	for name, tc := range map[string]struct {
		doc, status string
	}{
		"bare object":           {`{"apiVersion":"finch.connectops.dev/v1alpha1","kind":"FinchConnection","metadata":{"name":"a"}}`, Progressing},
		"empty status":          {`{"metadata":{"generation":1},"spec":{},"status":{}}`, Progressing},
		"empty conditions":      {`{"metadata":{"generation":1},"status":{"observedGeneration":1,"conditions":[]}}`, Progressing},
		"connected, no message": {`{"metadata":{"generation":1},"status":{"observedGeneration":1,"conditions":[{"type":"Connected","status":"True"}]}}`, Healthy},
		"stalled, no message":   {`{"metadata":{"generation":1},"status":{"observedGeneration":1,"conditions":[{"type":"Stalled","status":"True","reason":"DuplicateCustomerID"}]}}`, Degraded},
		"suspend false":         {`{"metadata":{"generation":1},"spec":{"suspend":false},"status":{"observedGeneration":1,"conditions":[{"type":"Connected","status":"True"}]}}`, Healthy},
	} {
		t.Run(name, func(t *testing.T) {
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(tc.doc), &obj); err != nil {
				t.Fatal(err)
			}
			got, err := runHealth(script, obj)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tc.status {
				t.Errorf("status = %q (message %q), want %q", got.Status, got.Message, tc.status)
			}
			if got.Message == "" {
				t.Errorf("empty message for status %s", got.Status)
			}
		})
	}
}

func app(generation, observed int64, conds ...metav1.Condition) *finchv1.FinchApp {
	a := &finchv1.FinchApp{
		TypeMeta:   metav1.TypeMeta{APIVersion: finchv1.GroupVersion.String(), Kind: "FinchApp"},
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "hr", Generation: generation, CreationTimestamp: now},
		Spec:       finchv1.FinchAppSpec{CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "finch-credentials"}},
	}
	a.Status.ObservedGeneration = observed
	a.Status.Conditions = conds
	return a
}

func TestFinchAppHealth(t *testing.T) {
	script := readScript(t, "finchapp-health.lua")
	tests := []struct {
		name    string
		obj     *finchv1.FinchApp
		status  string
		message string
	}{
		{"no status", app(1, 0), Progressing, "Waiting for the operator"},
		{"ready", app(1, 1, cond("Ready", metav1.ConditionTrue, "CredentialsFound", "Credentials Secret finch-credentials is well-formed")),
			Healthy, "CredentialsFound: Credentials Secret finch-credentials is well-formed"},
		{"stalled", app(1, 1,
			cond("Ready", metav1.ConditionFalse, "CredentialsMissing", "Secret finch-credentials not found"),
			cond("Stalled", metav1.ConditionTrue, "CredentialsMissing", "Create Secret hr/finch-credentials with client_id and client_secret")),
			Degraded, "Create Secret hr/finch-credentials with client_id and client_secret"},
		{"not ready, not stalled", app(1, 1,
			cond("Ready", metav1.ConditionFalse, "Reconciling", "Checking credentials"),
			cond("Stalled", metav1.ConditionFalse, "Reconciling", "")),
			Progressing, "Reconciling: Checking credentials"},
		{"ready unknown", app(1, 1, cond("Ready", metav1.ConditionUnknown, "Reconciling", "Checking credentials")),
			Progressing, "Reconciling: Checking credentials"},
		{"stale observedGeneration", app(2, 1, cond("Ready", metav1.ConditionTrue, "CredentialsFound", "ok")),
			Progressing, "Waiting for the operator"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runHealth(script, toUnstructured(t, tc.obj))
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tc.status || got.Message != tc.message {
				t.Errorf("got %q %q, want %q %q", got.Status, got.Message, tc.status, tc.message)
			}
		})
	}
}

// TestRunMatchesArgo checks the runner itself: the string library is not
// loaded (as in Argo CD's custom health checks) and a bad result is an error.
func TestRunMatchesArgo(t *testing.T) {
	obj := map[string]any{"metadata": map[string]any{"name": "x"}, "list": []any{"a", "b"}, "n": int64(3)}
	if _, err := runHealth(`return {status = string.upper("healthy")}`, obj); err == nil {
		t.Error("the string library is available; Argo CD does not load it for custom health checks")
	}
	got, err := runHealth(`hs = {}; hs.status = "Healthy"; hs.message = obj.metadata.name .. obj.list[2] .. tostring(obj.n + 1); return hs`, obj)
	if err != nil || got.Status != Healthy || got.Message != "xb4" {
		t.Errorf("got %+v, %v", got, err)
	}
	for _, script := range []string{`return "Healthy"`, `return {status = "Great"}`, `return {status = 1}`, `return {status = "Healthy", message = {}}`, `error("boom")`} {
		if _, err := runHealth(script, obj); err == nil {
			t.Errorf("%s: no error", script)
		}
	}
	if _, err := runHealth(`while true do end`, obj); err == nil {
		t.Error("an endless script did not time out")
	}
}

// TestREADMEEmbedsScripts keeps the argocd-cm snippet in config/argocd/README.md
// identical to the scripts.
func TestREADMEEmbedsScripts(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(argoDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var block []byte
	for _, part := range bytes.Split(readme, []byte("```yaml\n"))[1:] {
		body, _, _ := bytes.Cut(part, []byte("```"))
		if bytes.Contains(body, []byte("kind: ConfigMap")) {
			block = body
			break
		}
	}
	if block == nil {
		t.Fatal("README.md has no ```yaml block with the argocd-cm ConfigMap")
	}
	var cm struct {
		Metadata struct{ Name string }
		Data     map[string]string
	}
	if err := yaml.Unmarshal(block, &cm); err != nil {
		t.Fatalf("README argocd-cm snippet: %v", err)
	}
	if cm.Metadata.Name != "argocd-cm" {
		t.Errorf("snippet ConfigMap name %q, want argocd-cm", cm.Metadata.Name)
	}
	for key, file := range map[string]string{
		"resource.customizations.health.finch.connectops.dev_FinchConnection": "finchconnection-health.lua",
		"resource.customizations.health.finch.connectops.dev_FinchApp":        "finchapp-health.lua",
		"resource.customizations.health.finch.connectops.dev_ClusterFinchApp": "finchapp-health.lua",
	} {
		if got, want := cm.Data[key], readScript(t, file); got != want {
			t.Errorf("README snippet %s differs from %s: regenerate the snippet from the file", key, file)
		}
	}
}
