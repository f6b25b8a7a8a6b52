// The guard steps: whether this pass may act at all, and what it was asked.

package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/index"
	"github.com/connectops/finch-operator/internal/tokens"
)

// defaultConnectGrace is how long a new connection waits quietly for its
// FinchApp to appear (see FinchConnectionReconciler.ConnectGrace).
const defaultConnectGrace = 5 * time.Second

// skipSuspended: spec.suspend stops every Finch call. Reads spec.suspend.
func (r *FinchConnectionReconciler) skipSuspended(_ context.Context, s *syncState) outcome {
	if s.conn.Spec.Suspend {
		return suspended{}
	}
	return nil
}

// resolveApp finds the FinchApp or ClusterFinchApp and its Finch client.
// Reads spec.appRef; writes s.app and s.appObject.
func (r *FinchConnectionReconciler) resolveApp(ctx context.Context, s *syncState) outcome {
	conn := s.conn
	app, out := r.getApp(ctx, s)
	if out != nil {
		return out
	}
	resolved, err := r.Apps.Get(ctx, app)
	if err != nil {
		var cfgErr *apps.ConfigError
		if errors.As(err, &cfgErr) {
			return waitFor(finchv1.ReasonAppNotReady, fmt.Sprintf("%s is not usable: %s", conn.AppDescription(), cfgErr.Message))
		}
		return retry(err)
	}
	if resolved.CredentialsRejected() {
		return stalled(finchv1.ReasonInvalidCredentials, "%s", resolved.CredentialsRejectedMessage())
	}
	s.app, s.appObject = resolved, app
	return nil
}

// getApp reads the connection's app from the cache: its FinchApp, or a
// ClusterFinchApp that admits the connection's namespace.
func (r *FinchConnectionReconciler) getApp(ctx context.Context, s *syncState) (finchv1.AppObject, outcome) {
	conn := s.conn
	key := conn.AppKey()
	if !conn.UsesClusterApp() {
		app := &finchv1.FinchApp{}
		if err := r.Get(ctx, key, app); err != nil {
			if !apierrors.IsNotFound(err) {
				return nil, retry(fmt.Errorf("get FinchApp: %w", err))
			}
			return nil, r.appMissing(s, fmt.Sprintf(
				"FinchApp %q not found in namespace %s: create it or fix spec.appRef (the connection proceeds as soon as it exists)", key.Name, conn.Namespace))
		}
		return app, nil
	}
	if !r.ClusterApps {
		return nil, stalled(finchv1.ReasonClusterAppUnavailable,
			"spec.appRef names ClusterFinchApp %q, but this operator is installed namespace-scoped (--watch-namespaces) and cannot read cluster-scoped apps: use a FinchApp in namespace %s, or install the operator cluster-wide",
			key.Name, conn.Namespace)
	}
	app := &finchv1.ClusterFinchApp{}
	if err := r.Get(ctx, key, app); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, retry(fmt.Errorf("get ClusterFinchApp: %w", err))
		}
		return nil, r.appMissing(s, fmt.Sprintf(
			"ClusterFinchApp %q not found: create it or fix spec.appRef (the connection proceeds as soon as it exists)", key.Name))
	}
	ok, rules, err := apps.Admitted(ctx, r.Client, app.Spec.Conditions, conn.Namespace)
	if err != nil {
		return nil, retry(err)
	}
	if !ok {
		// No Finch call, and nothing else: the namespace watch and the
		// app's spec changes bring the connection back when this changes.
		return nil, stalled(finchv1.ReasonNamespaceNotAllowed,
			"ClusterFinchApp %q does not allow namespace %s (%s): ask its owner to allow this namespace in spec.conditions, or use a FinchApp in this namespace",
			key.Name, conn.Namespace, rules)
	}
	return app, nil
}

// appMissing handles an app the cache does not have. An app applied
// together with its connections (kubectl apply -f dir/, a GitOps sync) may
// reach the cache after them: a connection never reconciled before waits,
// without a status write or a Warning, for the app's watch event, and
// reports AppNotFound only when the app is still missing after the grace
// period. No API call: the app's watch event is what ends the wait.
func (r *FinchConnectionReconciler) appMissing(s *syncState, message string) outcome {
	grace := r.ConnectGrace
	if grace <= 0 {
		grace = defaultConnectGrace
	}
	if left := s.conn.CreationTimestamp.Add(grace).Sub(s.now); left > 0 && s.conn.Status.ObservedGeneration == 0 {
		return unseen{requeue: left}
	}
	return waitFor(finchv1.ReasonAppNotFound, message)
}

// rejectDuplicate stalls the newer of two FinchConnections of one app with
// the same customerID: two Connect links converted by one employer would
// create two connections (the migration guide's "Don't"). Reads s.appObject.
func (r *FinchConnectionReconciler) rejectDuplicate(ctx context.Context, s *syncState) outcome {
	conn := s.conn
	list := &finchv1.FinchConnectionList{}
	// A ClusterFinchApp's connections are looked up across namespaces: one
	// Finch application has one customer_id space.
	if err := r.List(ctx, list, index.ForAppValue(conn.AppKey(), index.ConnectionCustomer, conn.Spec.CustomerID)...); err != nil {
		return retry(fmt.Errorf("list connections by customer: %w", err))
	}
	// A connection in a namespace the ClusterFinchApp does not admit never
	// reaches Finch: it must not hold the customerID against this one.
	other := index.Oldest(list.Items, apps.AdmittedFilter(ctx, r.Client, s.appObject))
	if other == nil || other.UID == conn.UID || !index.Older(other, conn) {
		return nil
	}
	name := fmt.Sprintf("%q", other.Name)
	if other.Namespace != conn.Namespace {
		name = fmt.Sprintf("%q in namespace %s", other.Name, other.Namespace)
	}
	return stalled(finchv1.ReasonDuplicateCustomerID,
		"FinchConnection %s already uses customerID %q with %s; this one makes no Finch calls. Delete one of them (a customer may use suffixes such as acme-1, acme-2 for separate connections)",
		name, conn.Spec.CustomerID, conn.AppDescription())
}

// takeRequests reads the manual request annotations and what the last
// verified webhook said (the receiver records it as annotations) that
// status.lastHandled* does not acknowledge yet. Writes s.requests (status
// acknowledges them when the pass acts: requests.acknowledge) and, on a
// resync, clears status.codeExchangeError.
func (r *FinchConnectionReconciler) takeRequests(_ context.Context, s *syncState) outcome {
	conn, q := s.conn, &s.requests
	if v := conn.Annotations[finchv1.RequestedAtAnnotation]; v != "" && v != conn.Status.LastHandledReconcileAt {
		q.resync = v
		conn.Status.CodeExchangeError = "" // a resync acknowledges a refused code
	}
	if v := conn.Annotations[finchv1.ReauthRequestedAtAnnotation]; v != "" && v != conn.Status.LastHandledReauthAt {
		q.reauth = v
	}
	if v := conn.Annotations[finchv1.WebhookEventAnnotation]; v != "" && v != conn.Status.LastHandledWebhookEvent {
		q.webhook, q.webhookStatus = v, conn.Annotations[finchv1.WebhookStatusAnnotation]
	}
	return nil
}

// requests are what the annotations ask of this pass: the values taken
// ("": none). Status acknowledges them (status.lastHandled*) in the write of
// a pass that acted on them: an intent write, or the final write of a pass
// that was not deferred and did not fail (summarize).
type requests struct {
	resync, reauth, webhook string
	webhookStatus           string // the connection status the verified webhook reported
}

// forceIntrospect: a resync, or a webhook that did not say reauth.
func (q requests) forceIntrospect() bool {
	return q.resync != "" || q.webhook != "" && q.webhookStatus != finch.StatusReauth
}

// forceReauth: the reauthRequestedAt annotation.
func (q requests) forceReauth() bool { return q.reauth != "" }

func (q requests) any() bool { return q.resync != "" || q.reauth != "" || q.webhook != "" }

// acknowledge records the requests as handled in st.
func (q requests) acknowledge(st *finchv1.FinchConnectionStatus) {
	if q.resync != "" {
		st.LastHandledReconcileAt = q.resync
	}
	if q.reauth != "" {
		st.LastHandledReauthAt = q.reauth
	}
	if q.webhook != "" {
		st.LastHandledWebhookEvent = q.webhook
	}
}

// waitBackoff waits out a persisted backoff (status.retry). A spec change
// or a request (s.requests) skips it.
func (r *FinchConnectionReconciler) waitBackoff(_ context.Context, s *syncState) outcome {
	rs := s.conn.Status.Retry
	if rs == nil || s.requests.any() || rs.ObservedGeneration != s.conn.Generation {
		return nil
	}
	if wait := rs.NextAttemptTime.Sub(s.now); wait > 0 {
		return deferred{requeue: wait}
	}
	return nil
}

func (r *FinchConnectionReconciler) secrets() tokens.Reader {
	return tokens.Reader{Cached: r.Client, Metadata: r.SecretMetadata, API: r.APIReader}
}
