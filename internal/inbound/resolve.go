package inbound

import (
	"context"
	"errors"
	"sync"
	"time"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
)

// resolveFailureTTL bounds how long a failed resolution is remembered when
// nothing about the app changes (a Secret fixed while this replica's view of
// the app's status is the same as before).
const resolveFailureTTL = time.Minute

// appResolver is apps.Registry.Get for the inbound server, whose requests
// anyone can send. A healthy app resolves from the registry without a read;
// one that does not (its Secrets missing or malformed: an apps.ConfigError)
// would cost uncached Secret reads on every request. So a failure is
// remembered until the app object changes (the FinchApp controller, on the
// leader, reloads the app whenever its Secrets change and publishes the
// outcome in the app's status, which changes its resourceVersion), for at
// most resolveFailureTTL; and concurrent requests share one resolution.
type appResolver struct {
	apps     *apps.Registry
	failures *lru[failedResolution]
	mu       sync.Mutex
	inflight map[string]*resolveCall
}

type failedResolution struct {
	version string // the app's resourceVersion when it failed
	err     error
}

type resolveCall struct {
	done chan struct{}
	app  *apps.App
	err  error
}

func newAppResolver(reg *apps.Registry, now func() time.Time) *appResolver {
	return &appResolver{apps: reg, failures: newLRU[failedResolution](4096, resolveFailureTTL, now), inflight: map[string]*resolveCall{}}
}

// get resolves app, or returns the error it failed with for this version of it.
func (r *appResolver) get(ctx context.Context, app finchv1.AppObject) (*apps.App, error) {
	k := appKey(app)
	version := app.GetResourceVersion()
	if f, ok := r.failures.Get(k); ok && f.version == version {
		return nil, f.err
	}
	callKey := k + "\x00" + version
	r.mu.Lock()
	if c := r.inflight[callKey]; c != nil {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.app, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &resolveCall{done: make(chan struct{})}
	r.inflight[callKey] = c
	r.mu.Unlock()

	c.app, c.err = r.apps.Get(ctx, app)
	var cfgErr *apps.ConfigError
	if errors.As(c.err, &cfgErr) {
		r.failures.Add(k, failedResolution{version: version, err: c.err})
	}
	r.mu.Lock()
	delete(r.inflight, callKey)
	r.mu.Unlock()
	close(c.done)
	return c.app, c.err
}
