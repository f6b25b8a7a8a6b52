package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
)

// Condition types. Ready, Reconciling and Stalled follow kstatus so Flux,
// Argo CD and `kubectl wait` understand them.
const (
	// ConditionReady is True when the operator has done all it can for now.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the operator is working towards the desired state.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when progress needs a human (bad input or credentials).
	ConditionStalled = "Stalled"
	// ConditionConnected is True once Finch reports the connection connected.
	ConditionConnected = "Connected"
	// ConditionReauthRequired is True while the employer must re-authenticate.
	ConditionReauthRequired = "ReauthRequired"
	// ConditionDataSynced is True once Finch reported every initial data sync the connection's
	// products call for (webhooks job.initial_data_sync_org.succeeded and
	// job.initial_data_sync_payroll.succeeded): the data can be read.
	ConditionDataSynced = "DataSynced"
	// ConditionRateLimited is True on a FinchApp while Finch's per-IP penalty (finch_api_ip_rl) pauses
	// every Finch call of the operator.
	ConditionRateLimited = "RateLimited"
)

// Labels and annotations understood by the operator.
const (
	// ConnectionLabel marks Secrets that belong to a FinchConnection (token and code Secrets);
	// its value is the FinchConnection name.
	ConnectionLabel = "finch.connectops.dev/connection"
	// Finalizer is set on FinchConnections that hold a token, so deletion can
	// disconnect (Disconnect) or release the token Secret (Retain).
	Finalizer = "finch.connectops.dev/finalizer"
	// AppLabel on a Secret the operator creates for a FinchApp (its callback Secret) names that app.
	AppLabel = "finch.connectops.dev/app"
	// RequestedAtAnnotation requests a reconcile (a fresh introspection) when its value changes,
	// like Flux's reconcile.fluxcd.io/requestedAt. Its value is echoed in status.lastHandledReconcileAt.
	RequestedAtAnnotation = "finch.connectops.dev/requestedAt"
	// ReauthRequestedAtAnnotation asks for a re-authentication session when its value changes.
	ReauthRequestedAtAnnotation = "finch.connectops.dev/reauthRequestedAt"
	// WebhookEventAnnotation is set by the operator's webhook receiver to the Finch-Event-Id of
	// the last verified webhook for the connection; a new value wakes the controller (any replica
	// may receive a webhook, only the leader reconciles). Echoed in status.lastHandledWebhookEvent.
	WebhookEventAnnotation = "finch.connectops.dev/webhookEvent"
	// WebhookStatusAnnotation carries the connection status that webhook reported, if any.
	WebhookStatusAnnotation = "finch.connectops.dev/webhookStatus"
	// TokenConnectionIDAnnotation on a token Secret is the Finch connection_id of its token.
	TokenConnectionIDAnnotation = "finch.connectops.dev/connection-id"
	// TokenCustomerIDAnnotation on a token Secret is the customerID of its FinchConnection.
	TokenCustomerIDAnnotation = "finch.connectops.dev/customer-id"
	// TokenSessionIDAnnotation on a token Secret is the Connect session whose code produced the token,
	// so the callback refuses a second code for a session already completed.
	TokenSessionIDAnnotation = "finch.connectops.dev/session-id"
	// TokenCodeSecretUIDAnnotation on a token Secret is the UID of the code Secret its token came
	// from, so an interrupted clean-up never exchanges the same code twice.
	TokenCodeSecretUIDAnnotation = "finch.connectops.dev/code-secret-uid"
	// CallbackPathKey and CallbackStateKey are the keys of the FinchApp's callback Secret: the random
	// callback path segment and the HMAC key of the state parameter.
	CallbackPathKey  = "path"
	CallbackStateKey = "state-key"
	// CodeSecretType is the Secret type of an embedded-flow code handoff.
	CodeSecretType = "finch.connectops.dev/authorization-code"
	// TokenSecretType is the Secret type of token Secrets the operator writes.
	TokenSecretType = "finch.connectops.dev/access-token"
	// CodeKey is the key of the authorization code in a code Secret.
	CodeKey = "code"
	// AccessTokenKey is the key of the access token in a token Secret.
	AccessTokenKey = "access_token"
	// ConnectionIDKey is the key of the Finch connection_id in a token Secret.
	ConnectionIDKey = "connection_id"
)

// CallbackSecretName is the name of the Secret holding a FinchApp's callback
// path segment and state key: <app>-finch-callback, shortened with a hash when
// the name would exceed 253 characters.
func CallbackSecretName(app string) string {
	return shorten(app, "-finch-callback")
}

// shorten is name+suffix, shortened with a hash of name when it would exceed
// 253 characters.
func shorten(name, suffix string) string {
	if len(name)+len(suffix) <= 253 {
		return name + suffix
	}
	sum := sha256.Sum256([]byte(name))
	return name[:253-len(suffix)-9] + "-" + hex.EncodeToString(sum[:4]) + suffix
}

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	// name of the referent.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`
}

// AppReference names the Finch application a FinchConnection uses.
type AppReference struct {
	// kind is FinchApp (in the connection's namespace) or ClusterFinchApp (cluster-scoped, shared by the
	// namespaces its spec.conditions allow).
	// +kubebuilder:validation:Enum=FinchApp;ClusterFinchApp
	// +kubebuilder:default=FinchApp
	// +optional
	Kind string `json:"kind,omitempty"`

	// name of the FinchApp or ClusterFinchApp.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`
}

// Kinds of Finch application a connection may use.
const (
	FinchAppKind        = "FinchApp"
	ClusterFinchAppKind = "ClusterFinchApp"
)

// DescribeApp names an app key for messages: FinchApp "x" (a key with a
// namespace) or ClusterFinchApp "x" (one without).
func DescribeApp(key types.NamespacedName) string {
	if key.Namespace == "" {
		return fmt.Sprintf("%s %q", ClusterFinchAppKind, key.Name)
	}
	return fmt.Sprintf("%s %q", FinchAppKind, key.Name)
}

// ClusterCallbackSecretName is the name of a ClusterFinchApp's callback Secret
// in the cluster resource namespace: <app>-finch-cluster-callback. Its suffix
// differs from CallbackSecretName's, so a FinchApp in that namespace never
// shares it.
func ClusterCallbackSecretName(app string) string {
	return shorten(app, "-finch-cluster-callback")
}
