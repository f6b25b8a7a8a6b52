package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// harness is the setup both modes share: the control plane (envtest, with an
// admin kubeconfig for the manager processes and an unthrottled client for
// the bench itself), the tracker that watches every FinchConnection from the
// start (so the bare client and the operator are observed, and cost the API
// server, alike), the simulators and the manager launcher. close undoes it in
// reverse order: the managers stop first, the API server last.
type harness struct {
	env     *envtest.Environment
	cfg     *rest.Config // admin, unthrottled (QPS < 0)
	c       client.Client
	tr      *tracker
	launch  launcher
	closers []func()
}

// crdDir overrides the CRD directory envtest installs (default config/crd/bases).
var crdDir string

func startHarness(ctx context.Context, c common) (*harness, context.Context, error) {
	logf("starting envtest")
	env, err := testenv.New()
	if err != nil {
		return nil, nil, err
	}
	if crdDir != "" {
		env.CRDDirectoryPaths = []string{crdDir}
	}
	cfg, err := testenv.Start(env)
	if err != nil {
		return nil, nil, fmt.Errorf("start envtest: %w", err)
	}
	h := &harness{env: env, launch: launcher{bin: c.managerBin, kubeconfig: filepath.Join(c.runDir, "kubeconfig"), logDir: c.runDir, env: c.managerEnv}}
	h.onClose(func() {
		if err := env.Stop(); err != nil {
			logf("envtest stop: %v", err)
		}
	})
	ctx, cancelWatches := context.WithCancel(ctx)
	h.onClose(cancelWatches)
	if err := h.init(ctx, cfg); err != nil {
		h.close()
		return nil, nil, err
	}
	if c.inProcess {
		h.launch.inProcess = h.cfg
	}
	return h, ctx, nil
}

func (h *harness) init(ctx context.Context, cfg *rest.Config) error {
	user, err := h.env.ControlPlane.AddUser(envtest.User{Name: "finch-bench-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	if err := os.WriteFile(h.launch.kubeconfig, kc, 0o600); err != nil {
		return err
	}
	h.cfg = rest.CopyConfig(cfg)
	h.cfg.QPS, h.cfg.Burst = -1, 0 // the bench's own client is not throttled
	if h.c, err = client.New(h.cfg, client.Options{Scheme: testenv.Scheme}); err != nil {
		return err
	}
	// The operator's own namespace, as in a cluster: the Finch applications'
	// budget ConfigMaps live there (--cluster-resource-namespace).
	if err := h.namespace(ctx, operatorNamespace); err != nil {
		return err
	}
	h.tr, err = startTracker(ctx, h.cfg)
	return err
}

// operatorNamespace is the namespace the bench's managers run "in" (their
// --cluster-resource-namespace).
const operatorNamespace = "finch-operator-system"

func (h *harness) onClose(f func()) { h.closers = append(h.closers, f) }

func (h *harness) close() {
	for i := len(h.closers) - 1; i >= 0; i-- {
		h.closers[i]()
	}
}

func (h *harness) startSim() (*simServer, error) {
	s, err := startSim()
	if err == nil {
		h.onClose(s.close)
	}
	return s, err
}

// clientWithQPS is a client on the admin config with its own client-side limit.
func (h *harness) clientWithQPS(qps float32, burst int) (client.Client, error) {
	cfg := rest.CopyConfig(h.cfg)
	cfg.QPS, cfg.Burst = qps, burst
	return client.New(cfg, client.Options{Scheme: testenv.Scheme})
}

func (h *harness) namespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	return client.IgnoreAlreadyExists(h.c.Create(ctx, ns))
}

// createApp registers app at the simulator and creates the FinchApp appA in
// ns for it (credentials and webhook Secrets included), with budget rl.
func (h *harness) createApp(ctx context.Context, ns string, sim *simServer, app finchsim.AppConfig, rl finchsim.RateLimit) error {
	sim.AddApp(app)
	if err := h.namespace(ctx, ns); err != nil {
		return err
	}
	secret := func(name string, data map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: appA + name, Namespace: ns}, StringData: data}
	}
	creds := secret("-credentials", map[string]string{"client_id": app.ClientID, "client_secret": app.ClientSecret})
	if err := h.c.Create(ctx, creds); err != nil {
		return err
	}
	fa := &finchv1.FinchApp{
		ObjectMeta: metav1.ObjectMeta{Name: appA, Namespace: ns},
		Spec: finchv1.FinchAppSpec{
			APIURL:               sim.URL,
			CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: creds.Name},
			RedirectURI:          "https://operator.bench.example/callback/" + ns + "/" + appA,
			RateLimit:            &finchv1.RateLimit{Requests: int32(rl.Requests), Window: &metav1.Duration{Duration: rl.Window}},
		},
	}
	if app.WebhookSecret != "" {
		hook := secret("-webhook", map[string]string{"webhook_secret": app.WebhookSecret})
		if err := h.c.Create(ctx, hook); err != nil {
			return err
		}
		fa.Spec.WebhookSecretRef = &finchv1.WebhookSecretReference{Name: hook.Name}
	}
	return h.c.Create(ctx, fa)
}

func webhookSecret() string {
	return base64.StdEncoding.EncodeToString([]byte("finch-bench-webhook-signing-key-0123456789"))
}

// freePort reserves an ephemeral port on 127.0.0.1 and releases it.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05.000"), strings.TrimRight(msg, "\n"))
}
