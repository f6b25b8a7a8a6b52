package labeler

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/pkg/finchtest"
)

func TestLabelsConfigMapWhenConnected(t *testing.T) {
	ctx := t.Context()
	testEnv := &envtest.Environment{} // kube-apiserver and etcd from KUBEBUILDER_ASSETS
	cfg, err := testEnv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = testEnv.Stop() })
	env := finchtest.Start(t, cfg, finchtest.Options{}) // CRDs, Finch simulator, operator, FinchApp

	// The code under test, in its own manager.
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: finchtest.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: env.Namespace, Name: "acme"}}
	if err := env.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	conn, err := env.NewConnection(ctx, "acme", "acme-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Employer.Connect(ctx, conn, finchtest.Connect{}); err != nil {
		t.Fatal(err)
	}
	if _, err := finchtest.WaitForPhase(ctx, env.Client, conn, finchv1.PhaseConnected, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for cm.Labels[ConnectedLabel] != "true" {
		if time.Now().After(deadline) {
			t.Fatalf("ConfigMap %s/acme labels %v: no %s=true a minute after the connection was Connected", env.Namespace, cm.Labels, ConnectedLabel)
		}
		time.Sleep(100 * time.Millisecond)
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cm), cm); err != nil {
			t.Fatal(err)
		}
	}
}
