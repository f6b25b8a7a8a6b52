package apps

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/scheme"
)

func hostsApp(name, apiURL string) *finchv1.FinchApp {
	return &finchv1.FinchApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: "payroll", Name: name, Generation: 1},
		Spec: finchv1.FinchAppSpec{APIURL: apiURL,
			CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "creds"}},
	}
}

// An app whose apiURL names a host off the allow-list is not usable, says
// which host and which flag, and gets no client (so no Finch call); apps on
// allowed hosts get the guard of their own host.
func TestRegistryAPIHosts(t *testing.T) {
	creds := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "payroll", Name: "creds"},
		Data: map[string][]byte{"client_id": []byte("id"), "client_secret": []byte("secret")}}
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(creds).Build()
	r := &Registry{Reader: c, Writer: c, IPGuards: budget.NewIPGuards(budget.Config{}),
		APIHosts: finch.MustParseAPIHosts("api.tryfinch.com,127.0.0.1:8090")}
	ctx := context.Background()

	for _, bad := range []string{"http://127.0.0.1:8091", "https://internal.example.svc", "https://api.tryfinch.com:8443"} {
		app, err := r.Load(ctx, hostsApp("bad", bad))
		var cfgErr *ConfigError
		if !errors.As(err, &cfgErr) || app != nil {
			t.Fatalf("%s: %v, %v; want a ConfigError", bad, app, err)
		}
		if cfgErr.Reason != finchv1.ReasonAPIHostNotAllowed || !strings.Contains(cfgErr.Message, "--finch-api-hosts") {
			t.Errorf("%s: %s: %s; want reason %s naming --finch-api-hosts", bad, cfgErr.Reason, cfgErr.Message, finchv1.ReasonAPIHostNotAllowed)
		}
	}
	if _, err := r.Load(ctx, hostsApp("stub", "http://127.0.0.1:8091")); !strings.Contains(err.Error(), "127.0.0.1:8091") {
		t.Errorf("message %q does not name the host", err)
	}

	finchApp, err := r.Load(ctx, hostsApp("finch", ""))
	if err != nil {
		t.Fatal(err)
	}
	other, err := r.Load(ctx, hostsApp("other", "https://api.tryfinch.com/"))
	if err != nil {
		t.Fatal(err)
	}
	sim, err := r.Load(ctx, hostsApp("sim", "http://127.0.0.1:8090"))
	if err != nil {
		t.Fatal(err)
	}
	if finchApp.IPGuard == nil || finchApp.IPGuard != other.IPGuard || sim.IPGuard == finchApp.IPGuard {
		t.Errorf("guards: finch %p other %p sim %p; want finch == other != sim", finchApp.IPGuard, other.IPGuard, sim.IPGuard)
	}
	if finchApp.IPGuard.Host() != "https://api.tryfinch.com:443" || sim.IPGuard.Host() != "http://127.0.0.1:8090" {
		t.Errorf("guard hosts %q, %q", finchApp.IPGuard.Host(), sim.IPGuard.Host())
	}

	// The zero value allows Finch's own host only.
	zero := &Registry{Reader: c, Writer: c}
	if _, err := zero.Load(ctx, hostsApp("sim", "http://127.0.0.1:8090")); err == nil {
		t.Error("a Registry without APIHosts accepted a loopback apiURL")
	}
	if _, err := zero.Load(ctx, hostsApp("finch", "")); err != nil {
		t.Errorf("a Registry without APIHosts refused Finch's host: %v", err)
	}
}

// An http:// apiURL to a host that is not loopback, stored before the CRD
// refused it, gets no client (the client secret would travel in clear text)
// unless insecureAPIURL says so; the allow-list still applies then.
func TestRegistryInsecureAPIURL(t *testing.T) {
	creds := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "payroll", Name: "creds"},
		Data: map[string][]byte{"client_id": []byte("id"), "client_secret": []byte("secret")}}
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(creds).Build()
	r := &Registry{Reader: c, Writer: c, APIHosts: finch.MustParseAPIHosts("finch-sim.test:8090,localhost:*")}
	ctx := context.Background()

	app := hostsApp("plain", "http://finch-sim.test:8090")
	_, err := r.Load(ctx, app)
	var cfgErr *ConfigError
	if !errors.As(err, &cfgErr) || cfgErr.Reason != finchv1.ReasonInsecureAPIURL ||
		!strings.Contains(cfgErr.Message, "finch-sim.test:8090") || !strings.Contains(cfgErr.Message, "insecureAPIURL: true") {
		t.Fatalf("Load = %v; want a ConfigError %s naming the host and insecureAPIURL", err, finchv1.ReasonInsecureAPIURL)
	}
	if host, insecure := InsecureAPIURL(&app.Spec); insecure {
		t.Errorf("InsecureAPIURL without the flag = %q, true", host)
	}

	app.Spec.InsecureAPIURL = true
	if _, err := r.Load(ctx, app); err != nil {
		t.Fatalf("with insecureAPIURL: %v", err)
	}
	if host, insecure := InsecureAPIURL(&app.Spec); !insecure || host != "finch-sim.test:8090" {
		t.Errorf("InsecureAPIURL = %q, %v; want finch-sim.test:8090, true", host, insecure)
	}
	for _, loop := range []string{"http://localhost:8090", "https://finch-sim.test:8090"} {
		a := hostsApp("ok", loop)
		a.Spec.InsecureAPIURL = true
		if host, insecure := InsecureAPIURL(&a.Spec); insecure {
			t.Errorf("%s: InsecureAPIURL = %q, true; nothing travels in clear text to it", loop, host)
		}
	}
	if _, err := r.Load(ctx, hostsApp("local", "http://localhost:8090")); err != nil {
		t.Errorf("a loopback http:// apiURL needs no insecureAPIURL: %v", err)
	}
}
