package operator

import (
	"flag"
	"testing"
)

// BindManagerFlags is cmd/manager's whole command line, on any FlagSet: the
// flag reference (docs/reference/flags.md) is generated from a fresh FlagSet,
// so a flag cmd/manager takes from elsewhere would be missing from it.
func TestBindManagerFlags(t *testing.T) {
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	c := BindManagerFlags(fs)
	for _, name := range []string{"kubeconfig", "zap-log-level", "zap-encoder", "version", "finch-api-hosts", "callback-require-state", "metrics-bind-address"} {
		if fs.Lookup(name) == nil {
			t.Errorf("--%s is not registered", name)
		}
	}
	if err := fs.Parse([]string{"--version", "--kube-api-qps=42", "--callback-require-state=false"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Options.Complete(); err != nil {
		t.Fatal(err)
	}
	if !c.Version || c.Options.KubeQPS != 42 || !c.Options.Inbound.AllowStatelessCallbacks {
		t.Errorf("parsed: version %v, qps %v, stateless callbacks %v", c.Version, c.Options.KubeQPS, c.Options.Inbound.AllowStatelessCallbacks)
	}
}
