package finchtest_test

import (
	"context"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/pkg/finchsim"
	"github.com/connectops/finch-operator/pkg/finchtest"
)

// An employer connects through Finch Connect's redirect; the test sees the
// FinchConnection become Connected and counts the Finch calls it took.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testEnv := &envtest.Environment{} // kube-apiserver and etcd from KUBEBUILDER_ASSETS
	cfg, err := testEnv.Start()
	if err != nil {
		panic(err)
	}
	defer func() { _ = testEnv.Stop() }()

	env, err := finchtest.New(ctx, cfg, finchtest.Options{})
	if err != nil {
		panic(err)
	}
	defer env.Stop()

	conn, _ := env.NewConnection(ctx, "acme", "acme-1")
	if err := env.Employer.Connect(ctx, conn, finchtest.Connect{Provider: "gusto"}); err != nil {
		panic(err)
	}
	got, err := finchtest.WaitForPhase(ctx, env.Client, conn, finchv1.PhaseConnected, 2*time.Minute)
	if err != nil {
		panic(err)
	}
	fmt.Println(got.Status.Phase)
	fmt.Println("sessions created:", env.Calls()[finchsim.EndpointCreateSession])
	fmt.Println("codes exchanged:", env.Calls()[finchsim.EndpointToken])
	// Output:
	// Connected
	// sessions created: 1
	// codes exchanged: 1
}
