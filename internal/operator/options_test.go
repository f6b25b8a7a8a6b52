package operator

import (
	"flag"
	"net/url"
	"testing"
	"time"

	"github.com/connectops/finch-operator/controllers"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/inbound"
)

// cmd/manager, the tests and the benchmarks start from the same defaults.
func TestManagerDefaults(t *testing.T) {
	o := DefaultOptions()
	if o.KubeQPS != DefaultKubeQPS || o.KubeBurst != DefaultKubeBurst || o.Controllers.MaxConcurrentReconciles != DefaultWorkers {
		t.Errorf("defaults: qps %v burst %d workers %d", o.KubeQPS, o.KubeBurst, o.Controllers.MaxConcurrentReconciles)
	}
	if o.Controllers.IPBudget != controllers.DefaultIPBudget || o.Inbound.CallbackExchanges != inbound.DefaultCallbackExchanges {
		t.Errorf("budgets: ip %+v callback %+v", o.Controllers.IPBudget, o.Inbound.CallbackExchanges)
	}
	if o.Inbound.CallbackIPBurst != 10 || o.Inbound.CallbackIPInterval != 6*time.Second || o.Inbound.AllowStatelessCallbacks {
		t.Errorf("callback limits: %+v", o.Inbound)
	}
	if o.InboundAddr != DefaultInboundAddr || !o.Manager.LeaderElectionReleaseOnCancel {
		t.Errorf("manager: inbound %q, release on cancel %v", o.InboundAddr, o.Manager.LeaderElectionReleaseOnCancel)
	}
	// Plain-HTTP metrics unless --metrics-secure (the chart and
	// config/components/metrics-secure turn it on).
	if o.Manager.Metrics.SecureServing || o.Manager.Metrics.FilterProvider != nil {
		t.Errorf("metrics: secure by default")
	}
	// Only Finch's own API host, unless the operator is told otherwise.
	if got := o.Controllers.FinchAPIHosts.String(); got != finch.DefaultAPIHost {
		t.Errorf("--finch-api-hosts default %q, want %q", got, finch.DefaultAPIHost)
	}
}

func TestManagerFlags(t *testing.T) {
	var o Options
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	o.BindFlags(fs)
	if err := fs.Parse([]string{"--kube-api-qps=200", "--finch-ip-budget=450/5m", "--callback-require-state=false", "--trusted-proxies=10.0.0.0/8",
		"--finch-api-hosts=api.tryfinch.com, 127.0.0.1:8090"}); err != nil {
		t.Fatal(err)
	}
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	if o.KubeQPS != 200 || o.Controllers.IPBudget.Requests != 450 || !o.Inbound.AllowStatelessCallbacks || len(o.Inbound.TrustedProxies) != 1 {
		t.Errorf("parsed: %+v", o)
	}
	for raw, want := range map[string]bool{"https://api.tryfinch.com": true, "http://127.0.0.1:8090": true, "http://127.0.0.1:8091": false} {
		if u, _ := url.Parse(raw); o.Controllers.FinchAPIHosts.Allows(u) != want {
			t.Errorf("--finch-api-hosts: Allows(%s) = %v, want %v", raw, !want, want)
		}
	}
	for _, bad := range [][]string{{"--finch-ip-budget=lots"}, {"--callback-rate-per-ip=0/1m"}, {"--trusted-proxies=not-a-cidr"},
		{"--finch-api-hosts="}, {"--finch-api-hosts=https://api.tryfinch.com"}, {"--finch-api-hosts=api.tryfinch.com:0"},
		{"--metrics-cert-dir=/certs"}} {
		var o Options
		fs := flag.NewFlagSet("manager", flag.ContinueOnError)
		o.BindFlags(fs)
		if err := fs.Parse(bad); err != nil {
			t.Fatal(err)
		}
		if err := o.Complete(); err == nil {
			t.Errorf("%v: want an error naming the flag", bad)
		}
	}
}
