// Package testenv starts a real API server and etcd (controller-runtime
// envtest) with the operator's CRDs installed, for tests and benchmarks.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/connectops/finch-operator/internal/scheme"
)

// Scheme has the built-in types and the operator's API.
var Scheme = scheme.Scheme

// RepoRoot is the repository root, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// AssetsDir returns KUBEBUILDER_ASSETS, or else the newest control plane that
// `make envtest` built under bin/k8s, so `go test` works without make.
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	matches, _ := filepath.Glob(filepath.Join(RepoRoot(), "bin", "k8s", "*-"+goruntime.GOOS+"-"+goruntime.GOARCH))
	sort.Strings(matches)
	for i := len(matches) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(matches[i], "kube-apiserver")); err == nil {
			return matches[i], nil
		}
	}
	return "", fmt.Errorf("no envtest binaries: run `make envtest` (builds kube-apiserver and etcd into bin/k8s) or set KUBEBUILDER_ASSETS")
}

// New returns an envtest environment with the operator's CRDs.
func New() (*envtest.Environment, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	return &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
		Scheme:                Scheme,
		// envtest's default of 20 s is too short when several test packages
		// start their own kube-apiserver on a busy 2-core machine (TestInstall
		// failed so once in three runs with both cores kept busy).
		ControlPlaneStartTimeout: 3 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}, nil
}

// Start starts env and, if starting fails part-way (for example a CRD the
// API server rejects), stops what did start so no etcd or kube-apiserver
// outlives the test run.
func Start(env *envtest.Environment) (*rest.Config, error) {
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return cfg, nil
}

// StartForTest starts an API server with the operator's CRDs for one test and
// stops it when the test ends.
func StartForTest(t testing.TB) *rest.Config {
	t.Helper()
	env, err := New()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Start(env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	return cfg
}
