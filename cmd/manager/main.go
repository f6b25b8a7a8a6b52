// Command manager runs the finch-connect-operator: the FinchApp and
// FinchConnection controllers and the inbound server (redirect callback and
// Finch webhooks).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/connectops/finch-operator/controllers"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/internal/scheme"
)

func main() {
	var (
		metricsAddr, probeAddr, inboundAddr string
		pprofAddr                           string
		leaderElect                         bool
		leaderElectionID, leaderElectionNS  string
		workers                             int
		qps                                 float64
		burst                               int
		trustedProxies                      string
		ipBudget, callbackExchanges         string
		callbackIP                          string
		requireState                        bool
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint (plain HTTP); \"0\" disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	flag.StringVar(&inboundAddr, "inbound-bind-address", ":8082", "Address of the inbound server: /callback/{namespace}/{app}/{path} (employer browsers) and /webhooks/{namespace}/{app} (Finch); expose it through an Ingress. Use 127.0.0.1:8082 for a local run.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "", "Address of the net/http/pprof endpoints for profiling (empty: off).")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Enable leader election so only one replica reconciles (every replica serves the inbound endpoints).")
	flag.StringVar(&leaderElectionID, "leader-election-id", "finch-operator.connectops.dev", "Name of the leader election Lease.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	flag.IntVar(&workers, "max-concurrent-reconciles", 10, "FinchConnection reconciles run in parallel (Finch calls stay within each FinchApp's budget).")
	flag.Float64Var(&qps, "kube-api-qps", 500, "Client-side QPS limit toward the Kubernetes API server (API Priority and Fairness protects the server; see docs/benchmarks.md).")
	flag.IntVar(&burst, "kube-api-burst", 1000, "Client-side burst toward the Kubernetes API server.")
	flag.StringVar(&trustedProxies, "trusted-proxies", "", "Comma-separated CIDRs of proxies (Ingress controller, load balancer) whose X-Forwarded-For the callback's per-address rate limit believes; empty: the peer address counts.")
	flag.StringVar(&ipBudget, "finch-ip-budget", "900/5m", "Operator-wide budget of Finch requests, REQUESTS/WINDOW, shared by every FinchApp (one egress IP): Finch allows 1000 per 5 minutes per IP and answers finch_api_ip_rl with a 60-minute penalty beyond.")
	flag.StringVar(&callbackExchanges, "callback-exchanges", "10/1m", "Ceiling on code exchanges the redirect callback makes per FinchApp, REQUESTS/WINDOW; the rest of the app's token budget stays with reconciles (embedded hand-offs).")
	flag.StringVar(&callbackIP, "callback-rate-per-ip", "10/1m", "Callbacks allowed per client address, BURST/REFILL-INTERVAL-FOR-THE-BURST (default: a burst of 10, refilled over a minute); beyond it the callback answers 429 with Retry-After.")
	flag.BoolVar(&requireState, "callback-require-state", true, "Refuse redirect callbacks without the state the operator signed for the session. Set false only if Finch Connect does not return state for your app: such callbacks are then matched by the customer_id Finch echoes (within the same rate limits and exchange ceiling).")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	proxies, err := inbound.ParseTrustedProxies(trustedProxies)
	if err != nil {
		log.Error(err, "invalid --trusted-proxies")
		os.Exit(2)
	}
	ipCfg, err := parseBudget(ipBudget)
	if err != nil {
		log.Error(err, "invalid --finch-ip-budget")
		os.Exit(2)
	}
	cbCfg, err := parseBudget(callbackExchanges)
	if err != nil {
		log.Error(err, "invalid --callback-exchanges")
		os.Exit(2)
	}
	ipRate, err := parseBudget(callbackIP)
	if err != nil {
		log.Error(err, "invalid --callback-rate-per-ip")
		os.Exit(2)
	}

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(qps), burst
	if err := run(ctrl.SetupSignalHandler(), cfg, ctrl.Options{
		Scheme:                        scheme.Scheme,
		Cache:                         controllers.CacheOptions(),
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        probeAddr,
		PprofBindAddress:              pprofAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionNamespace:       leaderElectionNS,
		LeaderElectionReleaseOnCancel: true,
	}, controllers.Options{MaxConcurrentReconciles: workers, IPBudget: ipCfg}, inbound.Config{
		TrustedProxies: proxies, CallbackExchanges: cbCfg, AllowStatelessCallbacks: !requireState,
		CallbackIPBurst: ipRate.Requests, CallbackIPInterval: ipRate.Window / time.Duration(ipRate.Requests),
	}, inboundAddr); err != nil {
		log.Error(err, "manager exited")
		os.Exit(1)
	}
}

// parseBudget reads REQUESTS/WINDOW, e.g. 900/5m.
func parseBudget(s string) (finch.BudgetConfig, error) {
	n, w, ok := strings.Cut(s, "/")
	if !ok {
		return finch.BudgetConfig{}, fmt.Errorf("%q: want REQUESTS/WINDOW, e.g. 10/1m", s)
	}
	req, err := strconv.Atoi(n)
	if err != nil || req <= 0 {
		return finch.BudgetConfig{}, fmt.Errorf("%q: requests must be a positive integer", s)
	}
	win, err := time.ParseDuration(w)
	if err != nil || win <= 0 {
		return finch.BudgetConfig{}, fmt.Errorf("%q: window must be a positive duration", s)
	}
	return finch.BudgetConfig{Requests: req, Window: win}, nil
}

func run(ctx context.Context, cfg *rest.Config, mgrOpts ctrl.Options, ctrlOpts controllers.Options, inCfg inbound.Config, inboundAddr string) error {
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return err
	}
	op, err := controllers.Setup(ctx, mgr, ctrlOpts)
	if err != nil {
		return err
	}
	inCfg.Client, inCfg.APIReader, inCfg.Apps = mgr.GetClient(), mgr.GetAPIReader(), op.Apps
	inCfg.Recorder = mgr.GetEventRecorder("finch-operator")
	srv := inbound.New(inCfg)
	if err := mgr.Add(srv.Runnable(inboundAddr)); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting manager", "inbound", inboundAddr, "workers", ctrlOpts.MaxConcurrentReconciles)
	return mgr.Start(ctx)
}
