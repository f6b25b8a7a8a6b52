package finchtest_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/connectops/finch-operator/internal/testenv"
)

// TestMain points envtest at the control plane `make envtest` built when
// KUBEBUILDER_ASSETS is unset, so the examples read as a downstream test would
// (envtest.Environment{} with KUBEBUILDER_ASSETS) and still run with plain
// `go test`.
func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if dir, err := testenv.AssetsDir(); err == nil {
			_ = os.Setenv("KUBEBUILDER_ASSETS", dir)
		}
	}
	code := m.Run()
	if shared != nil {
		_ = shared.Stop()
	}
	os.Exit(code)
}

var (
	sharedOnce sync.Once
	shared     *envtest.Environment
	sharedCfg  *rest.Config
	sharedErr  error
)

// apiServer is one API server for the package's tests (the examples start
// their own, as a reader would).
func apiServer(t *testing.T) *rest.Config {
	t.Helper()
	sharedOnce.Do(func() {
		shared = &envtest.Environment{ControlPlaneStartTimeout: 3 * time.Minute}
		sharedCfg, sharedErr = shared.Start()
		if sharedErr != nil {
			_ = shared.Stop()
			shared = nil
		}
	})
	if sharedErr != nil {
		t.Fatalf("start envtest: %v", sharedErr)
	}
	return sharedCfg
}

var ctx = context.Background()
