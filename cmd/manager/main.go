// Command manager runs the finch-connect-operator: the FinchApp and
// FinchConnection controllers and the inbound server (redirect callback and
// Finch webhooks).
package main

import (
	"context"
	"flag"
	"os"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/connectops/finch-operator/controllers"
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
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint (plain HTTP); \"0\" disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	flag.StringVar(&inboundAddr, "inbound-bind-address", ":8082", "Address of the inbound server: /callback/{namespace}/{app} (employer browsers) and /webhooks/{namespace}/{app} (Finch); expose it through an Ingress.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "", "Address of the net/http/pprof endpoints for profiling (empty: off).")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Enable leader election so only one replica reconciles (every replica serves the inbound endpoints).")
	flag.StringVar(&leaderElectionID, "leader-election-id", "finch-operator.connectops.dev", "Name of the leader election Lease.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	flag.IntVar(&workers, "max-concurrent-reconciles", 10, "FinchConnection reconciles run in parallel (Finch calls stay within each FinchApp's budget).")
	flag.Float64Var(&qps, "kube-api-qps", 500, "Client-side QPS limit toward the Kubernetes API server (API Priority and Fairness protects the server; see docs/benchmarks.md).")
	flag.IntVar(&burst, "kube-api-burst", 1000, "Client-side burst toward the Kubernetes API server.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

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
	}, workers, inboundAddr); err != nil {
		log.Error(err, "manager exited")
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *rest.Config, mgrOpts ctrl.Options, workers int, inboundAddr string) error {
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return err
	}
	op, err := controllers.Setup(ctx, mgr, controllers.Options{MaxConcurrentReconciles: workers})
	if err != nil {
		return err
	}
	srv := inbound.New(inbound.Config{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Apps: op.Apps,
		Recorder: mgr.GetEventRecorder("finch-operator"),
	})
	if err := mgr.Add(srv.Runnable(inboundAddr)); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting manager", "inbound", inboundAddr, "workers", workers)
	return mgr.Start(ctx)
}
