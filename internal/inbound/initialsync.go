package inbound

import (
	"context"
	"fmt"
	"net/http"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/tokens"
)

// The initial data sync webhooks write status.initialSync themselves: it is
// Finch's report, not a reason to call Finch, and the controller only derives
// condition DataSynced from it.
// +kubebuilder:rbac:groups=finch.connectops.dev,resources=finchconnections/status,verbs=get;patch

// initialSyncsTotal is per namespace and app of the connection, like every
// business series.
var initialSyncsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "finch_initial_syncs_total",
	Help: "Initial data syncs Finch reported by webhook (job.initial_data_sync_org.succeeded, job.initial_data_sync_payroll.succeeded) and recorded on a FinchConnection, by the connection's namespace and app and by kind (organization, payroll).",
}, []string{"namespace", "app", "kind"})

func init() { metrics.Registry.MustRegister(initialSyncsTotal) }

// initialSync queues a verified initial data sync webhook for its
// FinchConnection (answered once queued, like account.updated); the worker
// records the first time of each kind in status.initialSync (writeInitialSync).
// Redeliveries and other replicas find the time set and change nothing.
func (s *Server) initialSync(ctx context.Context, log logr.Logger, app types.NamespacedName, ev *finch.WebhookEvent, kind string) (int, string) {
	conns, err := s.initialSyncTargets(ctx, app, ev)
	if err != nil {
		log.Error(err, "webhook: cannot find the FinchConnection")
		return http.StatusInternalServerError, webhookError
	}
	if ev.ConnectionID == "" && len(conns) > 1 {
		// A company_id or account_id several connections share does not say which one synced.
		conns = nil
	}
	var recs []*webhookRecord
	already := 0
	for i := range conns {
		conn := &conns[i]
		switch {
		case !conn.DeletionTimestamp.IsZero():
			continue
		case initialSyncTime(conn, kind) != nil:
			already++
			continue
		}
		recs = append(recs, &webhookRecord{conn: client.ObjectKeyFromObject(conn), kind: recordInitialSync + "/" + kind, eventID: ev.EventID, status: kind,
			detail: fmt.Sprintf("Finch reports the initial %s data sync of connection %s succeeded (%s, job %s)", kind, orUnknown(ev.ConnectionID), ev.EventType, orUnknown(ev.Data.JobID))})
	}
	switch {
	case len(recs) > 0:
		return s.enqueue(log, recs)
	case already > 0:
		return http.StatusOK, webhookDuplicate
	default:
		log.Info("webhook: no FinchConnection has this connection")
		return http.StatusOK, webhookUnknownConnection
	}
}

// writeInitialSync is the queue worker's half of initialSync: the time in
// status, then the metric and an Event, once.
func (s *Server) writeInitialSync(ctx context.Context, conn *finchv1.FinchConnection, rec *webhookRecord) error {
	if err := s.cfg.Client.Get(ctx, client.ObjectKeyFromObject(conn), conn); err != nil {
		return fmt.Errorf("get FinchConnection: %w", err)
	}
	marked, err := s.markInitialSync(ctx, conn, rec.status)
	if err != nil || !marked {
		return err
	}
	ns, app := finch.ConnectionLabels(conn)
	initialSyncsTotal.WithLabelValues(ns, app, rec.status).Inc()
	s.event(conn, corev1.EventTypeNormal, finchv1.ReasonInitialSyncSucceeded, "Webhook", rec.detail)
	s.log.Info("webhook recorded: initial data sync", "finchConnection", client.ObjectKeyFromObject(conn).String(), "kind", rec.status)
	return nil
}

// initialSyncTargets are the connections an initial sync event is about: as
// for account.updated, else the one whose token Secret holds the connection.
// The callback stores the token before the controller's introspection puts
// connection_id in status, and this event comes once: it must not be lost in
// that window.
func (s *Server) initialSyncTargets(ctx context.Context, app types.NamespacedName, ev *finch.WebhookEvent) ([]finchv1.FinchConnection, error) {
	list, err := s.webhookTargets(ctx, app, ev)
	if err != nil || len(list.Items) > 0 || ev.ConnectionID == "" {
		if err != nil {
			return nil, err
		}
		return list.Items, nil
	}
	secrets := &corev1.SecretList{}
	opts := []client.ListOption{client.HasLabels{finchv1.ConnectionLabel}}
	if app.Namespace != "" {
		opts = append(opts, client.InNamespace(app.Namespace))
	}
	if err := s.cfg.Client.List(ctx, secrets, opts...); err != nil {
		return nil, fmt.Errorf("list token Secrets: %w", err)
	}
	for i := range secrets.Items {
		sec := &secrets.Items[i]
		if !tokens.HoldsConnection(sec, ev.ConnectionID) {
			continue
		}
		conn := &finchv1.FinchConnection{}
		err := s.cfg.Client.Get(ctx, types.NamespacedName{Namespace: sec.Namespace, Name: sec.Labels[finchv1.ConnectionLabel]}, conn)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get FinchConnection: %w", err)
		}
		if conn.AppKey() == app && (conn.Status.ConnectionID == "" || conn.Status.ConnectionID == ev.ConnectionID) {
			return []finchv1.FinchConnection{*conn}, nil
		}
	}
	return nil, nil
}

// markInitialSync sets status.initialSync.<kind> to now unless it is set, and
// says whether it did. The optimistic lock keeps the first time when another
// replica records the same event at once.
func (s *Server) markInitialSync(ctx context.Context, conn *finchv1.FinchConnection, kind string) (bool, error) {
	now := metav1.NewTime(s.cfg.Now())
	marked := false
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if initialSyncTime(conn, kind) != nil {
			return nil
		}
		orig := conn.DeepCopy()
		if conn.Status.InitialSync == nil {
			conn.Status.InitialSync = &finchv1.InitialSyncStatus{}
		}
		if kind == finch.SyncPayroll {
			conn.Status.InitialSync.Payroll = &now
		} else {
			conn.Status.InitialSync.Organization = &now
		}
		err := s.cfg.Client.Status().Patch(ctx, conn, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
		if apierrors.IsConflict(err) {
			fresh := &finchv1.FinchConnection{}
			if gerr := s.cfg.APIReader.Get(ctx, client.ObjectKeyFromObject(conn), fresh); gerr != nil {
				return gerr
			}
			*conn = *fresh
		}
		marked = err == nil
		return err
	})
	return marked, err
}

func initialSyncTime(conn *finchv1.FinchConnection, kind string) *metav1.Time {
	is := conn.Status.InitialSync
	switch {
	case is == nil:
		return nil
	case kind == finch.SyncPayroll:
		return is.Payroll
	default:
		return is.Organization
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
