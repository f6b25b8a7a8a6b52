// Package operator wires one operator process: cmd/manager's flags, the
// controller-runtime manager and its cache, the controllers and the inbound
// server, which are siblings below it and never import each other.
package operator

import (
	"context"
	"fmt"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/connectops/finch-operator/controllers"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/events"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/internal/scheme"
)

// Operator is what NewManager wired, for tests that drive a part directly.
type Operator struct {
	// Apps resolves FinchApps and ClusterFinchApps (clients, budgets) for
	// both the controllers and the inbound server.
	Apps *apps.Registry
	// Events records the Events of the controllers and the inbound server.
	Events *events.Recorder
	// Inbound is the callback and webhook server.
	Inbound *inbound.Server
}

// EventSource is the reporting controller of every Event the operator records.
const EventSource = "finch-operator"

// NewManager builds the manager with everything cmd/manager runs: the
// scheme and cache both halves rely on, the controllers, the inbound server
// and the health checks. cmd/manager, the tests and the benchmarks all use
// it, so none of them wires a different operator.
func NewManager(ctx context.Context, cfg *rest.Config, o Options) (ctrl.Manager, *Operator, error) {
	mgr, err := newManager(cfg, o)
	if err != nil {
		return nil, nil, err
	}
	// One Event writer for the controllers and the inbound server, with
	// bounded memory (events.Recorder says why not client-go's).
	op := &Operator{Events: &events.Recorder{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Controller: EventSource}}
	if err := mgr.Add(op.Events); err != nil {
		return nil, nil, err
	}
	if op.Apps, err = controllers.Setup(ctx, mgr, op.Events, o.Controllers); err != nil {
		return nil, nil, err
	}
	in := o.Inbound
	in.Client, in.APIReader, in.Apps = mgr.GetClient(), mgr.GetAPIReader(), op.Apps
	in.Namespaces = o.Controllers.WatchNamespaces
	in.Recorder = op.Events.NonBlocking() // handlers never wait for room in the Event queue
	op.Inbound = inbound.New(in)
	if o.InboundAddr != "" && o.InboundAddr != "0" {
		if err := mgr.Add(op.Inbound.Runnable(o.InboundAddr)); err != nil {
			return nil, nil, fmt.Errorf("inbound server: %w", err)
		}
		if err := mgr.AddReadyzCheck("inbound", op.Inbound.ReadyCheck); err != nil {
			return nil, nil, err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, nil, err
	}
	if o.ReadyCheck != nil {
		if err := mgr.AddReadyzCheck("shutdown", o.ReadyCheck); err != nil {
			return nil, nil, err
		}
	}
	return mgr, op, nil
}

// newManager is the controller-runtime manager: the API server's client
// limits, the scheme, and the cache scoped to the watched namespaces.
func newManager(cfg *rest.Config, o Options) (ctrl.Manager, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = DefaultKubeQPS, DefaultKubeBurst
	if o.KubeQPS > 0 {
		cfg.QPS = float32(o.KubeQPS)
	}
	if o.KubeBurst > 0 {
		cfg.Burst = o.KubeBurst
	}
	mo := o.Manager
	mo.Scheme = scheme.Scheme
	mo.Cache = CacheOptions()
	if ns := o.Controllers.WatchNamespaces; len(ns) > 0 {
		mo.Cache.DefaultNamespaces = map[string]cache.Config{}
		for _, n := range ns {
			mo.Cache.DefaultNamespaces[n] = cache.Config{}
		}
	}
	if mo.Metrics.BindAddress == "" {
		mo.Metrics = metricsserver.Options{BindAddress: "0"}
	}
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return nil, fmt.Errorf("new manager: %w", err)
	}
	return mgr, nil
}
