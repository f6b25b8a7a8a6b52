package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/testenv"
)

// world is one run's control plane: envtest (kube-apiserver + etcd), an
// admin kubeconfig for the manager processes and an unthrottled client for
// the bench itself.
type world struct {
	env        *envtest.Environment
	cfg        *rest.Config // admin, unthrottled (QPS < 0)
	c          client.Client
	kubeconfig string
	runDir     string
}

// crdDir overrides the CRD directory envtest installs (default config/crd/bases).
var crdDir string

func startWorld(runDir string) (*world, error) {
	env, err := testenv.New()
	if err != nil {
		return nil, err
	}
	if crdDir != "" {
		env.CRDDirectoryPaths = []string{crdDir}
	}
	cfg, err := testenv.Start(env)
	if err != nil {
		return nil, fmt.Errorf("start envtest: %w", err)
	}
	w := &world{env: env, runDir: runDir}
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "finch-bench-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		w.stop()
		return nil, err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		w.stop()
		return nil, err
	}
	w.kubeconfig = filepath.Join(runDir, "kubeconfig")
	if err := os.WriteFile(w.kubeconfig, kc, 0o600); err != nil {
		w.stop()
		return nil, err
	}
	w.cfg = rest.CopyConfig(cfg)
	w.cfg.QPS, w.cfg.Burst = -1, 0 // the bench's own client is not throttled
	w.c, err = client.New(w.cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		w.stop()
		return nil, err
	}
	return w, nil
}

func (w *world) stop() {
	if w.env != nil {
		if err := w.env.Stop(); err != nil {
			logf("envtest stop: %v", err)
		}
	}
}

// clientWithQPS is a client on the admin config with its own client-side limit.
func (w *world) clientWithQPS(qps float32, burst int) (client.Client, error) {
	cfg := rest.CopyConfig(w.cfg)
	cfg.QPS, cfg.Burst = qps, burst
	return client.New(cfg, client.Options{Scheme: testenv.Scheme})
}

func (w *world) namespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	return client.IgnoreAlreadyExists(w.c.Create(ctx, ns))
}

// appSpec is a FinchApp plus the simulator app behind it.
type appSpec struct {
	ns, name         string
	clientID         string
	clientSecret     string
	apiURL           string
	requests         int32
	window           time.Duration
	webhookSecretB64 string // "" for none
}

func (w *world) createApp(ctx context.Context, a appSpec) error {
	if err := w.namespace(ctx, a.ns); err != nil {
		return err
	}
	creds := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: a.name + "-credentials", Namespace: a.ns},
		StringData: map[string]string{"client_id": a.clientID, "client_secret": a.clientSecret},
	}
	if err := w.c.Create(ctx, creds); err != nil {
		return err
	}
	app := &finchv1.FinchApp{
		ObjectMeta: metav1.ObjectMeta{Name: a.name, Namespace: a.ns},
		Spec: finchv1.FinchAppSpec{
			APIURL:               a.apiURL,
			CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: creds.Name},
			RedirectURI:          "https://operator.bench.example/callback/" + a.ns + "/" + a.name,
			RateLimit:            &finchv1.RateLimit{Requests: a.requests, Window: &metav1.Duration{Duration: a.window}},
		},
	}
	if a.webhookSecretB64 != "" {
		hook := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: a.name + "-webhook", Namespace: a.ns},
			StringData: map[string]string{"webhook_secret": a.webhookSecretB64},
		}
		if err := w.c.Create(ctx, hook); err != nil {
			return err
		}
		app.Spec.WebhookSecretRef = &finchv1.WebhookSecretReference{Name: hook.Name}
	}
	return w.c.Create(ctx, app)
}

func webhookSecret() string {
	return base64.StdEncoding.EncodeToString([]byte("finch-bench-webhook-signing-key-0123456789"))
}

// newConn is the FinchConnection the bench creates: one employer.
func newConn(ns, name, customer string) *finchv1.FinchConnection {
	return &finchv1.FinchConnection{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: finchv1.FinchConnectionSpec{
			CustomerID:    customer,
			CustomerName:  "Employer " + customer,
			CustomerEmail: customer + "@employer.example",
			Products:      []finchv1.Product{"company", "directory", "individual", "employment", "payment"},
		},
	}
}

func connName(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }

// createConns creates n FinchConnections with `workers` goroutines, calling
// done (if set) after each create. perSecond > 0 spreads them over time.
func createConns(ctx context.Context, c client.Client, ns, prefix string, from, n, workers int, perSecond float64, done func(*finchv1.FinchConnection)) error {
	idx := make(chan int)
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				conn := newConn(ns, connName(prefix, i), fmt.Sprintf("%s-cust-%05d", prefix, i))
				var err error
				for attempt := 0; attempt < 5; attempt++ {
					if err = c.Create(ctx, conn); err == nil || ctx.Err() != nil {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("create %s: %w", conn.Name, err)
					}
					mu.Unlock()
					continue
				}
				if done != nil {
					done(conn)
				}
			}
		}()
	}
	start := time.Now()
	for k := 0; k < n; k++ {
		if perSecond > 0 {
			if d := time.Until(start.Add(time.Duration(float64(k) / perSecond * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		select {
		case idx <- from + k:
		case <-ctx.Done():
			k = n
		}
	}
	close(idx)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
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
