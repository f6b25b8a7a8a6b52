package finchtest_test

// This file is the example test of docs/testing.md ("Testing your
// integration"), compiled and run here so the page cannot rot.

import (
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/pkg/finchsim"
	"github.com/connectops/finch-operator/pkg/finchtest"
)

func TestEmployerConnects(t *testing.T) {
	ctx := t.Context()
	testEnv := &envtest.Environment{} // kube-apiserver and etcd from KUBEBUILDER_ASSETS
	cfg, err := testEnv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = testEnv.Stop() })
	env := finchtest.Start(t, cfg, finchtest.Options{}) // CRDs, Finch simulator, operator, FinchApp

	conn, err := env.NewConnection(ctx, "acme", "acme-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Employer.Connect(ctx, conn, finchtest.Connect{Provider: "gusto"}); err != nil {
		t.Fatal(err)
	}
	if _, err := finchtest.WaitForPhase(ctx, env.Client, conn, finchv1.PhaseConnected, 2*time.Minute); err != nil {
		t.Fatal(err) // says the phase, conditions and last Events it saw
	}
	// ... assert what your code did; and that Finch was used sparingly:
	if n := env.Calls()[finchsim.EndpointToken]; n != 1 {
		t.Errorf("POST /auth/token called %d times, want 1", n)
	}
}
