// Package tokens owns the token Secret contract that the controllers and the
// inbound server share: how a connection's token Secret is read, when the
// operator may write it, how a token is stored, and how a verified webhook is
// recorded on its FinchConnection.
package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// ErrNotOwned means the token Secret exists, belongs to someone else and is
// not labelled for the connection, so the operator will not write it.
var ErrNotOwned = errors.New("token Secret is neither owned by nor labelled for this FinchConnection")

// stored is per namespace and app of the connection, never per connection.
var stored = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "finch_tokens_stored_total",
	Help: "Access tokens written to token Secrets, by the connection's namespace and app and by flow (redirect, embedded).",
}, []string{"namespace", "app", "flow"})

func init() { metrics.Registry.MustRegister(stored) }

// Flows of Source.Flow.
const (
	FlowRedirect = "redirect"
	FlowEmbedded = "embedded"
)

// InitMetrics exports the token counter of a namespace and app at zero for
// each flow (the controller calls it when it first sees a connection of the
// pair), so that increase() sees the first token stored.
func InitMetrics(namespace, app string) {
	for _, f := range []string{FlowRedirect, FlowEmbedded} {
		stored.WithLabelValues(namespace, app, f)
	}
}

// State is what a connection's token Secret says.
type State struct {
	Exists   bool   // the Secret exists
	Token    string // access token ("" when the Secret has none)
	Version  string // the Secret's resourceVersion
	Owned    bool   // controlled by this FinchConnection
	Labelled bool   // labelled finch.connectops.dev/connection=<name>
	CodeUID  string // the code Secret the token came from, if any
	// SessionID is the Connect session the token came from, if known.
	SessionID string
}

// Writable says whether the operator may write the token Secret: it does not
// exist yet, or it is owned by or labelled for the connection.
func (t State) Writable() bool { return !t.Exists || t.Owned || t.Labelled }

// Reader reads Secrets. Cached is the label-filtered cache (token and code
// Secrets), Metadata sees every Secret's metadata, API reads uncached.
type Reader struct {
	Cached   client.Reader
	Metadata client.Reader
	API      client.Reader
}

// Token reads the connection's token Secret from the label-filtered cache and
// falls back to an uncached read only when the metadata cache says the Secret
// exists without the label (a migrated Secret), when status says a token
// existed (the cache may lag a Secret just written), or when the cached copy
// is not of the token Secret type (the cache keeps only the metadata of such
// Secrets, e.g. a migrated Opaque one the operator has written to).
func (r Reader) Token(ctx context.Context, conn *finchv1.FinchConnection) (State, error) {
	key := types.NamespacedName{Namespace: conn.Namespace, Name: conn.TokenSecretName()}
	sec := &corev1.Secret{}
	err := r.Cached.Get(ctx, key, sec)
	if err == nil && sec.Type != finchv1.TokenSecretType {
		err = r.API.Get(ctx, key, sec)
	}
	if apierrors.IsNotFound(err) {
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		merr := r.Metadata.Get(ctx, key, meta)
		switch {
		case merr == nil || conn.Status.TokenVersion != "":
			err = r.API.Get(ctx, key, sec)
		case apierrors.IsNotFound(merr):
		default:
			return State{}, fmt.Errorf("read token Secret metadata: %w", merr)
		}
	}
	if apierrors.IsNotFound(err) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read token Secret %s: %w", key.Name, err)
	}
	return StateOf(sec, conn), nil
}

// StateOf is what Secret sec says as conn's token Secret.
func StateOf(sec *corev1.Secret, conn *finchv1.FinchConnection) State {
	return State{
		Exists:    true,
		Token:     string(sec.Data[finchv1.AccessTokenKey]),
		Version:   sec.ResourceVersion,
		Owned:     metav1.IsControlledBy(sec, conn),
		Labelled:  sec.Labels[finchv1.ConnectionLabel] == conn.Name,
		CodeUID:   sec.Annotations[finchv1.TokenCodeSecretUIDAnnotation],
		SessionID: sec.Annotations[finchv1.TokenSessionIDAnnotation],
	}
}

// CodeSecrets lists the embedded-flow code Secrets handed over for the
// connection, oldest first.
func (r Reader) CodeSecrets(ctx context.Context, conn *finchv1.FinchConnection) ([]corev1.Secret, error) {
	list := &corev1.SecretList{}
	if err := r.Cached.List(ctx, list, client.InNamespace(conn.Namespace),
		client.MatchingLabels{finchv1.ConnectionLabel: conn.Name}); err != nil {
		return nil, fmt.Errorf("list code Secrets: %w", err)
	}
	var out []corev1.Secret
	for _, sec := range list.Items {
		if sec.Type == finchv1.CodeSecretType && sec.DeletionTimestamp == nil {
			out = append(out, sec)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].CreationTimestamp.Before(&out[j].CreationTimestamp)
	})
	return out, nil
}

// HoldsConnection says whether sec holds a token of Finch connection id.
func HoldsConnection(sec *corev1.Secret, id string) bool {
	return id != "" && (sec.Annotations[finchv1.TokenConnectionIDAnnotation] == id || string(sec.Data[finchv1.ConnectionIDKey]) == id)
}

// FromSession says whether sec's token came from Connect session id.
func FromSession(sec *corev1.Secret, id string) bool {
	return id != "" && sec.Annotations[finchv1.TokenSessionIDAnnotation] == id
}

// Source says where a token came from.
type Source struct {
	// Flow is "redirect" (the callback) or "embedded" (a code Secret); the
	// label of finch_tokens_stored_total.
	Flow string
	// CodeSecretUID is the code Secret the token was exchanged from ("": none).
	CodeSecretUID string
	// SessionID is the Connect session whose code produced the token ("": unknown).
	SessionID string
}

// Store writes an access token into the connection's token Secret, creating
// it (owned by and labelled for the connection) or replacing the token in a
// Secret the operator owns or that is labelled for the connection. It retries
// conflicts and transient API errors: the code behind the token is
// single-use, so losing this write would lose the connection's token.
//
// reader must be uncached: a migrated Secret is not in the label-filtered cache.
func Store(ctx context.Context, c client.Client, reader client.Reader, conn *finchv1.FinchConnection, tok *finch.TokenResponse, src Source) error {
	key := types.NamespacedName{Namespace: conn.Namespace, Name: conn.TokenSecretName()}
	err := retry.OnError(retry.DefaultBackoff, func(err error) bool {
		return !errors.Is(err, ErrNotOwned) && !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err)
	}, func() error {
		sec := &corev1.Secret{}
		err := reader.Get(ctx, key, sec)
		if apierrors.IsNotFound(err) {
			sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}}
			fill(sec, conn, tok, src)
			if err := controllerutil.SetControllerReference(conn, sec, c.Scheme()); err != nil {
				return err
			}
			return c.Create(ctx, sec)
		}
		if err != nil {
			return err
		}
		if !StateOf(sec, conn).Writable() {
			return ErrNotOwned
		}
		fill(sec, conn, tok, src)
		return c.Update(ctx, sec)
	})
	if err != nil {
		return fmt.Errorf("store token in Secret %s: %w", key.Name, err)
	}
	ns, app := finch.ConnectionLabels(conn)
	stored.WithLabelValues(ns, app, src.Flow).Inc()
	return nil
}

func fill(sec *corev1.Secret, conn *finchv1.FinchConnection, tok *finch.TokenResponse, src Source) {
	if sec.Labels == nil {
		sec.Labels = map[string]string{}
	}
	sec.Labels[finchv1.ConnectionLabel] = conn.Name
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	// Non-secret facts beside the token, for consumers of the Secret.
	sec.Annotations[finchv1.TokenConnectionIDAnnotation] = tok.ConnectionID
	sec.Annotations[finchv1.TokenCustomerIDAnnotation] = conn.Spec.CustomerID
	setOrDelete(sec.Annotations, finchv1.TokenSessionIDAnnotation, src.SessionID)
	setOrDelete(sec.Annotations, finchv1.TokenCodeSecretUIDAnnotation, src.CodeSecretUID)
	if sec.Type == "" {
		sec.Type = finchv1.TokenSecretType
	}
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[finchv1.AccessTokenKey] = []byte(tok.AccessToken)
	sec.Data[finchv1.ConnectionIDKey] = []byte(tok.ConnectionID)
}

func setOrDelete(m map[string]string, k, v string) {
	if v != "" {
		m[k] = v
	} else {
		delete(m, k)
	}
}

// RecordWebhook notes a verified webhook on the FinchConnection (event ID and
// the status it reported) so the controller, on whichever replica leads,
// reacts to it. A merge patch of two annotations: no Finch call, no spec change.
func RecordWebhook(ctx context.Context, c client.Client, conn *finchv1.FinchConnection, eventID, connectionStatus string) error {
	patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{
		finchv1.WebhookEventAnnotation:  eventID,
		finchv1.WebhookStatusAnnotation: connectionStatus,
	}}}
	raw, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("record webhook: %w", err)
	}
	if err := c.Patch(ctx, conn, client.RawPatch(types.MergePatchType, raw)); err != nil {
		return fmt.Errorf("record webhook on FinchConnection %s: %w", conn.Name, err)
	}
	return nil
}
