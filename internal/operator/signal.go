package operator

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// errShuttingDown is the readiness failure after SIGTERM.
var errShuttingDown = errors.New("shutting down")

// SignalContext replaces controller-runtime's SetupSignalHandler with a
// lame-duck period: on SIGTERM or SIGINT the returned check fails (the Pod
// turns NotReady) but the context is cancelled only delay later, so the
// replica keeps reconciling as leader and answering callbacks and webhooks
// while the Service's endpoints, kube-proxy and the Ingress controller catch
// up with its deletion (they do so in parallel with SIGTERM:
// https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination).
// Then the manager stops as before: the inbound server finishes the requests
// in flight, records the queued webhook events, and the Lease is released.
// A second signal exits at once.
func SignalContext(delay time.Duration, log logr.Logger) (context.Context, healthz.Checker) {
	ctx, cancel := context.WithCancel(context.Background())
	var stopping atomic.Bool
	c := make(chan os.Signal, 2)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-c
		stopping.Store(true)
		log.Info("stop signal received: serving on, then stopping", "delay", delay.String())
		select {
		case <-time.After(delay):
			cancel()
		case <-c:
			os.Exit(1)
		}
		<-c
		os.Exit(1)
	}()
	return ctx, func(*http.Request) error {
		if stopping.Load() {
			return errShuttingDown
		}
		return nil
	}
}
