// Command manager runs the finch-connect-operator: the FinchApp and
// FinchConnection controllers and the inbound server (redirect callback and
// Finch webhooks).
package main

import (
	"flag"
	"os"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/connectops/finch-operator/controllers"
)

func main() {
	var o controllers.ManagerOptions
	o.BindFlags(flag.CommandLine)
	zo := zap.Options{}
	zo.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zo)))
	log := ctrl.Log.WithName("setup")
	if err := o.Complete(); err != nil {
		log.Error(err, "invalid flag")
		os.Exit(2)
	}

	ctx := ctrl.SetupSignalHandler()
	mgr, _, err := controllers.NewManager(ctx, ctrl.GetConfigOrDie(), o)
	if err != nil {
		log.Error(err, "set up the manager")
		os.Exit(1)
	}
	log.Info("starting manager", "inbound", o.InboundAddr, "workers", o.Controllers.MaxConcurrentReconciles)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "manager exited")
		os.Exit(1)
	}
}
