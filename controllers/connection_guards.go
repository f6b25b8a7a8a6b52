// The guard steps: whether this pass may act at all, and what it was asked.

package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/apps"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/index"
	"github.com/connectops/finch-operator/internal/tokens"
)

// defaultConnectGrace is how long a new connection waits quietly for its
// FinchApp to appear (see FinchConnectionReconciler.ConnectGrace).
const defaultConnectGrace = 5 * time.Second

// skipSuspended: spec.suspend stops every Finch call.
func (r *FinchConnectionReconciler) skipSuspended(_ context.Context, s *syncState) *outcome {
	if s.conn.Spec.Suspend {
		return &outcome{suspended: true}
	}
	return nil
}

// resolveApp finds the FinchApp and its Finch client.
func (r *FinchConnectionReconciler) resolveApp(ctx context.Context, s *syncState) *outcome {
	conn := s.conn
	key := types.NamespacedName{Namespace: conn.Namespace, Name: conn.AppName()}
	app := &finchv1.FinchApp{}
	if err := r.Get(ctx, key, app); err != nil {
		if !apierrors.IsNotFound(err) {
			return retry(fmt.Errorf("get FinchApp: %w", err))
		}
		return r.appMissing(s, key)
	}
	resolved, err := r.Apps.Get(ctx, app)
	if err != nil {
		var cfgErr *apps.ConfigError
		if errors.As(err, &cfgErr) {
			return &outcome{wait: &reason{finchv1.ReasonAppNotReady, fmt.Sprintf("FinchApp %q is not usable: %s", app.Name, cfgErr.Message)}}
		}
		return retry(err)
	}
	if resolved.CredentialsRejected() {
		return stalled(finchv1.ReasonInvalidCredentials,
			"Finch rejected the client credentials of FinchApp %q (invalid_client): fix Secret %s (the sandbox, development and production apps have different credentials)",
			app.Name, app.Spec.CredentialsSecretRef.Name)
	}
	s.app = resolved
	return nil
}

// appMissing handles a FinchApp the cache does not have. A FinchApp applied
// together with its connections (kubectl apply -f dir/, a GitOps sync) may
// reach the cache after them: a connection never reconciled before waits,
// without a status write or a Warning, for the app's watch event, and
// reports AppNotFound only when the app is still missing after the grace
// period. No API call: the app's watch event is what ends the wait.
func (r *FinchConnectionReconciler) appMissing(s *syncState, key types.NamespacedName) *outcome {
	grace := r.ConnectGrace
	if grace <= 0 {
		grace = defaultConnectGrace
	}
	if left := s.conn.CreationTimestamp.Add(grace).Sub(s.now); left > 0 && s.conn.Status.ObservedGeneration == 0 {
		return &outcome{unseen: true, requeue: left}
	}
	return &outcome{wait: &reason{finchv1.ReasonAppNotFound, fmt.Sprintf(
		"FinchApp %q not found in namespace %s: create it or fix spec.appRef (the connection proceeds as soon as it exists)",
		key.Name, key.Namespace)}}
}

// rejectDuplicate stalls the newer of two FinchConnections of one app with
// the same customerID: two Connect links converted by one employer would
// create two connections (the migration guide's "Don't").
func (r *FinchConnectionReconciler) rejectDuplicate(ctx context.Context, s *syncState) *outcome {
	conn := s.conn
	list := &finchv1.FinchConnectionList{}
	if err := r.List(ctx, list, client.InNamespace(conn.Namespace),
		client.MatchingFields{index.ConnectionCustomer: index.AppScoped(conn.AppName(), conn.Spec.CustomerID)}); err != nil {
		return retry(fmt.Errorf("list connections by customer: %w", err))
	}
	other := index.Oldest(list.Items, nil)
	if other == nil || other.UID == conn.UID || !index.Older(other, conn) {
		return nil
	}
	return stalled(finchv1.ReasonDuplicateCustomerID,
		"FinchConnection %q already uses customerID %q with FinchApp %q; this one makes no Finch calls. Delete one of them (a customer may use suffixes such as acme-1, acme-2 for separate connections)",
		other.Name, conn.Spec.CustomerID, conn.AppName())
}

// takeRequests reads the manual request annotations and what the last
// verified webhook said (the receiver records it as annotations).
func (r *FinchConnectionReconciler) takeRequests(_ context.Context, s *syncState) *outcome {
	conn := s.conn
	if v := conn.Annotations[finchv1.RequestedAtAnnotation]; v != "" && v != conn.Status.LastHandledReconcileAt {
		s.forceIntrospect = true
		conn.Status.LastHandledReconcileAt = v
	}
	if v := conn.Annotations[finchv1.ReauthRequestedAtAnnotation]; v != "" && v != conn.Status.LastHandledReauthAt {
		s.forceReauth = true
		conn.Status.LastHandledReauthAt = v
	}
	if v := conn.Annotations[finchv1.WebhookEventAnnotation]; v != "" && v != conn.Status.LastHandledWebhookEvent {
		s.hadHint = true
		s.webhookStatus = conn.Annotations[finchv1.WebhookStatusAnnotation]
		if s.webhookStatus != finch.StatusReauth {
			s.forceIntrospect = true
		}
		conn.Status.LastHandledWebhookEvent = v
	}
	return nil
}

// waitBackoff waits out a persisted backoff. A spec change or an explicit
// request skips it.
func (r *FinchConnectionReconciler) waitBackoff(_ context.Context, s *syncState) *outcome {
	rs := s.conn.Status.Retry
	if rs == nil || s.forceIntrospect || s.forceReauth || s.hadHint || rs.ObservedGeneration != s.conn.Generation {
		return nil
	}
	if wait := rs.NextAttemptTime.Sub(s.now); wait > 0 {
		return &outcome{requeue: wait, deferred: true}
	}
	return nil
}

func (r *FinchConnectionReconciler) secrets() tokens.Reader {
	return tokens.Reader{Cached: r.Client, Metadata: r.SecretMetadata, API: r.APIReader}
}
