// Command manager runs the finch-connect-operator: the FinchApp and
// FinchConnection controllers and the inbound server (redirect callback and
// Finch webhooks).
package main

import (
	"flag"
	"fmt"
	"os"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/internal/version"
)

func main() {
	cl := operator.BindManagerFlags(flag.CommandLine)
	flag.Parse()
	o := &cl.Options
	if cl.Version {
		fmt.Println("manager", version.Get())
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&cl.Zap)))
	log := ctrl.Log.WithName("setup")
	if err := o.Complete(); err != nil {
		log.Error(err, "invalid flag")
		os.Exit(2)
	}

	if err := version.RegisterMetric(metrics.Registry); err != nil {
		log.Error(err, "metrics")
		os.Exit(1)
	}

	ctx, ready := operator.SignalContext(o.ShutdownDelay, log)
	o.ReadyCheck = ready
	mgr, _, err := operator.NewManager(ctx, ctrl.GetConfigOrDie(), *o)
	if err != nil {
		log.Error(err, "set up the manager")
		os.Exit(1)
	}
	log.Info("starting manager", "version", version.Get().Version, "revision", version.Get().Revision, "inbound", o.InboundAddr, "workers", o.Controllers.MaxConcurrentReconciles)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "manager exited")
		os.Exit(1)
	}
}
