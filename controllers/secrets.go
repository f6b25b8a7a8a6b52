package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// ErrTokenSecretNotOwned means the token Secret exists, belongs to someone
// else and is not labelled for the connection, so the operator will not write it.
var ErrTokenSecretNotOwned = errors.New("token Secret is neither owned by nor labelled for this FinchConnection")

// tokenState is what the token Secret says.
type tokenState struct {
	exists   bool   // the Secret exists
	token    string // access token ("" when the Secret has none)
	version  string // the Secret's resourceVersion
	owned    bool   // controlled by this FinchConnection
	labelled bool   // labelled finch.connectops.dev/connection=<name>
	codeUID  string // the code Secret the token came from, if any
}

func (t tokenState) writable() bool { return !t.exists || t.owned || t.labelled }

// SecretReader reads Secrets. Cached is the label-filtered cache (token and
// code Secrets), Metadata sees every Secret's metadata, API reads uncached.
type SecretReader struct {
	Cached   client.Reader
	Metadata client.Reader
	API      client.Reader
}

// readToken reads the connection's token Secret from the label-filtered cache
// and falls back to an uncached read only when the metadata cache says the
// Secret exists without the label (a migrated Secret), or when status says a
// token existed (the cache may lag a Secret just written).
func (s SecretReader) readToken(ctx context.Context, conn *finchv1.FinchConnection) (tokenState, error) {
	key := types.NamespacedName{Namespace: conn.Namespace, Name: conn.TokenSecretName()}
	sec := &corev1.Secret{}
	err := s.Cached.Get(ctx, key, sec)
	if apierrors.IsNotFound(err) {
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		merr := s.Metadata.Get(ctx, key, meta)
		switch {
		case merr == nil || conn.Status.TokenVersion != "":
			err = s.API.Get(ctx, key, sec)
		case apierrors.IsNotFound(merr):
		default:
			return tokenState{}, fmt.Errorf("read token Secret metadata: %w", merr)
		}
	}
	if apierrors.IsNotFound(err) {
		return tokenState{}, nil
	}
	if err != nil {
		return tokenState{}, fmt.Errorf("read token Secret %s: %w", key.Name, err)
	}
	return tokenState{
		exists:   true,
		token:    string(sec.Data[finchv1.AccessTokenKey]),
		version:  sec.ResourceVersion,
		owned:    metav1.IsControlledBy(sec, conn),
		labelled: sec.Labels[finchv1.ConnectionLabel] == conn.Name,
		codeUID:  sec.Annotations[codeSourceAnnotation],
	}, nil
}

// codeSecrets lists the embedded-flow code Secrets handed over for the
// connection, oldest first.
func (s SecretReader) codeSecrets(ctx context.Context, conn *finchv1.FinchConnection) ([]corev1.Secret, error) {
	list := &corev1.SecretList{}
	if err := s.Cached.List(ctx, list, client.InNamespace(conn.Namespace),
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

// StoreToken writes an access token into the connection's token Secret,
// creating it (owned by and labelled for the connection) or replacing the
// token in a Secret the operator owns or that is labelled for the connection.
// It retries conflicts and transient API errors: the code behind the token is
// single-use, so losing this write would lose the connection's token.
//
// reader must be uncached: a migrated Secret is not in the label-filtered cache.
//
// sessionID is the Connect session whose code produced the token ("" if unknown).
func StoreToken(ctx context.Context, c client.Client, reader client.Reader, conn *finchv1.FinchConnection, tok *finch.TokenResponse, flow, sessionID string) error {
	return storeToken(ctx, c, reader, conn, tok, flow, "", sessionID)
}

// codeSourceAnnotation records which code Secret a token came from, so an
// interrupted clean-up never exchanges the same code twice.
const codeSourceAnnotation = "finch.connectops.dev/code-secret-uid"

func storeToken(ctx context.Context, c client.Client, reader client.Reader, conn *finchv1.FinchConnection, tok *finch.TokenResponse, flow, codeSecretUID, sessionID string) error {
	key := types.NamespacedName{Namespace: conn.Namespace, Name: conn.TokenSecretName()}
	err := retry.OnError(retry.DefaultBackoff, func(err error) bool {
		return !errors.Is(err, ErrTokenSecretNotOwned) && !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err)
	}, func() error {
		sec := &corev1.Secret{}
		err := reader.Get(ctx, key, sec)
		if apierrors.IsNotFound(err) {
			sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}}
			fillTokenSecret(sec, conn, tok, codeSecretUID, sessionID)
			if err := controllerutil.SetControllerReference(conn, sec, c.Scheme()); err != nil {
				return err
			}
			return c.Create(ctx, sec)
		}
		if err != nil {
			return err
		}
		if !metav1.IsControlledBy(sec, conn) && sec.Labels[finchv1.ConnectionLabel] != conn.Name {
			return ErrTokenSecretNotOwned
		}
		fillTokenSecret(sec, conn, tok, codeSecretUID, sessionID)
		return c.Update(ctx, sec)
	})
	if err != nil {
		return fmt.Errorf("store token in Secret %s: %w", key.Name, err)
	}
	tokensStored.WithLabelValues(flow).Inc()
	return nil
}

func fillTokenSecret(sec *corev1.Secret, conn *finchv1.FinchConnection, tok *finch.TokenResponse, codeSecretUID, sessionID string) {
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
	if sessionID != "" {
		sec.Annotations[finchv1.TokenSessionIDAnnotation] = sessionID
	} else {
		delete(sec.Annotations, finchv1.TokenSessionIDAnnotation)
	}
	if codeSecretUID != "" {
		sec.Annotations[codeSourceAnnotation] = codeSecretUID
	} else {
		delete(sec.Annotations, codeSourceAnnotation)
	}
	if sec.Type == "" {
		sec.Type = finchv1.TokenSecretType
	}
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[finchv1.AccessTokenKey] = []byte(tok.AccessToken)
	sec.Data["connection_id"] = []byte(tok.ConnectionID)
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
		return err
	}
	if err := c.Patch(ctx, conn, client.RawPatch(types.MergePatchType, raw)); err != nil {
		return fmt.Errorf("record webhook on FinchConnection %s: %w", conn.Name, err)
	}
	return nil
}
