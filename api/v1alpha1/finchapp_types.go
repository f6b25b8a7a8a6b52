package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// FinchAppSpec describes one Finch application: its credentials and how the operator talks to Finch for it.
// +kubebuilder:validation:XValidation:rule="!has(self.apiURL) || !isURL(self.apiURL) || url(self.apiURL).getScheme() != 'http' || url(self.apiURL).getHostname() in ['127.0.0.1', '::1', 'localhost'] || (has(self.insecureAPIURL) && self.insecureAPIURL)",fieldPath=".apiURL",message="apiURL must be an https:// URL such as https://api.tryfinch.com: the client secret travels in every request, so http:// is accepted only for a loopback host (127.0.0.1, ::1, localhost) or with insecureAPIURL: true"
// +kubebuilder:validation:XValidation:rule="!has(self.apiVersion) || !has(self.finchAPIVersion) || self.apiVersion == self.finchAPIVersion",fieldPath=".apiVersion",message="apiVersion is the deprecated name of finchAPIVersion: remove apiVersion and keep finchAPIVersion (the two differ)"
type FinchAppSpec struct {
	// credentialsSecretRef names the Secret holding the application's client ID and client secret.
	// +required
	CredentialsSecretRef CredentialsSecretReference `json:"credentialsSecretRef"`

	// webhookSecretRef names the Secret holding the base64 webhook signing secret from the Finch dashboard.
	// Without it the operator rejects every webhook for this app.
	// +optional
	WebhookSecretRef *WebhookSecretReference `json:"webhookSecretRef,omitempty"`

	// apiURL is the base URL of the Finch API. Its host must be one the operator allows
	// (its --finch-api-hosts flag, default api.tryfinch.com); otherwise the app is Stalled with
	// reason APIHostNotAllowed and nothing is sent there. It must be https:// unless its host is
	// loopback (127.0.0.1, ::1, localhost: a local simulator) or insecureAPIURL is true, because the
	// client secret and access tokens travel in every request.
	// +kubebuilder:default="https://api.tryfinch.com"
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''",message="apiURL must be an https:// URL such as https://api.tryfinch.com"
	// +optional
	APIURL string `json:"apiURL,omitempty"`

	// insecureAPIURL allows an http:// apiURL whose host is not loopback. The client secret and every
	// access token then cross the network in clear text: use it only for a test double on a network
	// you trust, never with real credentials. The operator records a Warning Event (InsecureAPIURL)
	// on the app while it is set.
	// +optional
	InsecureAPIURL bool `json:"insecureAPIURL,omitempty"`

	// finchAPIVersion is the value of the Finch-API-Version header sent on every request
	// (default 2020-09-17).
	// +kubebuilder:validation:MaxLength=10
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}$')",message="finchAPIVersion must be a date YYYY-MM-DD such as 2020-09-17 (the Finch-API-Version header)"
	// +optional
	FinchAPIVersion string `json:"finchAPIVersion,omitempty"`

	// apiVersion is the deprecated name of finchAPIVersion (it shadowed the Kubernetes field name):
	// still read when finchAPIVersion is empty, with a Warning Event (DeprecatedField). Rename it.
	// +kubebuilder:validation:MaxLength=10
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}$')",message="apiVersion (deprecated: rename it to finchAPIVersion) must be a date YYYY-MM-DD such as 2020-09-17"
	// +optional
	DeprecatedAPIVersion string `json:"apiVersion,omitempty"`

	// redirectURI is the default redirect URI for Connect sessions; it must be allow-listed in the
	// Finch dashboard. When empty and publicURL is set, the operator's own callback is used.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''",message="redirectURI must be an http:// or https:// URL such as https://app.example.com/finch/callback"
	// +optional
	RedirectURI string `json:"redirectURI,omitempty"`

	// publicURL is the externally reachable base URL of the operator's inbound server (Ingress).
	// It gives the callback URL <publicURL>/callback/<namespace>/<name>/... and the webhook URL
	// <publicURL>/webhooks/<namespace>/<name> (a ClusterFinchApp: <publicURL>/cluster/callback/<name>/...
	// and <publicURL>/cluster/webhooks/<name>), published in status.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''",message="publicURL must be an http:// or https:// URL such as https://finch-operator.example.com"
	// +optional
	PublicURL string `json:"publicURL,omitempty"`

	// defaultConnectFlow is the connectFlow of this app's FinchConnections that set none: Redirect or
	// Embedded. Default: Redirect when redirectURI or publicURL is set, else Embedded.
	// +optional
	DefaultConnectFlow ConnectFlow `json:"defaultConnectFlow,omitempty"`

	// successURL is where the callback redirects the employer's browser after a successful
	// connection; when empty the callback shows a short "you can close this window" page.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''",message="successURL must be an http:// or https:// URL such as https://app.example.com/finch/done"
	// +optional
	SuccessURL string `json:"successURL,omitempty"`

	// rateLimit is the client-side request budget toward Finch, per endpoint, shared by all
	// connections of this app. Finch documents about 20 requests per minute per endpoint.
	// +kubebuilder:default={requests: 20, window: "1m"}
	// +optional
	RateLimit *RateLimit `json:"rateLimit,omitempty"`

	// introspectionInterval is how often connected connections are health-checked with
	// GET /introspect when no webhook has spoken for them. Each check costs one request of the budget.
	// Between 1m and 720h (30 days); omit it for the default, 6h.
	// +kubebuilder:default="6h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')",message="introspectionInterval must be a duration such as 6h, 90m or 1h30m (units h, m, s)"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('1m') && duration(self) <= duration('720h'))",message="introspectionInterval must be between 1m and 720h; omit it for the default, 6h (each check costs one request of the app's budget)"
	// +optional
	IntrospectionInterval *metav1.Duration `json:"introspectionInterval,omitempty"`
}

// FinchAPIVersionHeader is the Finch-API-Version the app asks for: finchAPIVersion, else the
// deprecated apiVersion, else "" (the client's default, 2020-09-17).
func (s *FinchAppSpec) FinchAPIVersionHeader() string {
	if s.FinchAPIVersion != "" {
		return s.FinchAPIVersion
	}
	return s.DeprecatedAPIVersion
}

// CredentialsSecretReference names the Secret and keys holding Finch client credentials.
type CredentialsSecretReference struct {
	// name of the Secret in the FinchApp's namespace (a ClusterFinchApp's: in the operator's cluster
	// resource namespace).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`

	// clientIDKey is the key of the client ID in the Secret.
	// +kubebuilder:default=client_id
	// +kubebuilder:validation:MinLength=1
	// +optional
	ClientIDKey string `json:"clientIDKey,omitempty"`

	// clientSecretKey is the key of the client secret in the Secret.
	// +kubebuilder:default=client_secret
	// +kubebuilder:validation:MinLength=1
	// +optional
	ClientSecretKey string `json:"clientSecretKey,omitempty"`
}

// WebhookSecretReference names the Secret and key holding the webhook signing secret.
type WebhookSecretReference struct {
	// name of the Secret in the FinchApp's namespace (a ClusterFinchApp's: in the operator's cluster
	// resource namespace).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`

	// key of the base64 webhook secret in the Secret.
	// +kubebuilder:default=webhook_secret
	// +kubebuilder:validation:MinLength=1
	// +optional
	Key string `json:"key,omitempty"`
}

// RateLimit is a request budget: at most `requests` requests per endpoint in any rolling `window`.
type RateLimit struct {
	// requests is the number of requests allowed per endpoint in one window.
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	Requests int32 `json:"requests,omitempty"`

	// window is the length of the rolling window: between 1s and 1h (default 1m, the window of
	// Finch's documented limit).
	// +kubebuilder:default="1m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')",message="rateLimit.window must be a duration such as 1m, 30s or 1m30s (units h, m, s)"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('1h'))",message="rateLimit.window must be between 1s and 1h; omit it for the default, 1m (Finch's limits are per minute)"
	// +optional
	Window *metav1.Duration `json:"window,omitempty"`
}

// FinchAppStatus is what the operator observed about the app.
type FinchAppStatus struct {
	// observedGeneration is the generation of the spec the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready is True when the credentials Secret exists and is well-formed.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// callbackURL is the redirect-flow callback URL to allow-list in the Finch dashboard (from publicURL).
	// Its last path segment is a random value kept in Secret callbackSecretName, so only employers
	// Finch redirected there learn it.
	// +optional
	CallbackURL string `json:"callbackURL,omitempty"`

	// callbackSecretName is the Secret (created by the operator, owned by this FinchApp) holding the
	// callback path segment and the key that signs each session's state parameter. Deleting it rotates
	// both: update the Finch dashboard's redirect URI afterwards.
	// +optional
	CallbackSecretName string `json:"callbackSecretName,omitempty"`

	// webhookURL is the URL to register as a webhook endpoint in the Finch dashboard (from publicURL).
	// +optional
	WebhookURL string `json:"webhookURL,omitempty"`

	// connections counts this app's FinchConnections by phase.
	// +optional
	Connections ConnectionCounts `json:"connections,omitempty"`

	// finchApplication is the Finch application this app's credentials name (its apiURL and
	// client_id). Finch counts its rate limits per application, so every FinchApp and
	// ClusterFinchApp with the same apiURL and client_id shares one request budget.
	// +optional
	FinchApplication *FinchApplicationStatus `json:"finchApplication,omitempty"`
}

// MaxSharedWith bounds status.finchApplication.sharedWith.
const MaxSharedWith = 20

// FinchApplicationStatus is one Finch application (apiURL and client_id) as an app's status shows it.
type FinchApplicationStatus struct {
	// id names the Finch application: 16 hex digits of a SHA-256 of apiURL and client_id (never the
	// client secret). Apps with the same id share one request budget.
	// +required
	ID string `json:"id"`

	// budgetConfigMap is the ConfigMap, in the operator's cluster resource namespace, that records what
	// the application's budget spent, so that a restarted operator or a new leader keeps to Finch's
	// limits. Empty: the operator has no cluster resource namespace and keeps the budget in memory only.
	// +optional
	BudgetConfigMap string `json:"budgetConfigMap,omitempty"`

	// rateLimit is the budget in effect for the application: the strictest spec.rateLimit of the apps
	// that share it (the fewest requests, over the longest window), which keeps within every one of them.
	// +optional
	RateLimit *RateLimit `json:"rateLimit,omitempty"`

	// sharedWith names the other FinchApps and ClusterFinchApps that use the same Finch application, and
	// so the same budget: at most MaxSharedWith of them (sharedWithCount counts them all).
	// +kubebuilder:validation:MaxItems=20
	// +optional
	SharedWith []AppObjectReference `json:"sharedWith,omitempty"`

	// sharedWithCount is the number of other FinchApps and ClusterFinchApps that use the same Finch
	// application.
	// +optional
	SharedWithCount int32 `json:"sharedWithCount"`
}

// AppObjectReference names a FinchApp or a ClusterFinchApp.
type AppObjectReference struct {
	// kind is FinchApp or ClusterFinchApp.
	// +required
	Kind string `json:"kind"`
	// namespace of a FinchApp (empty for a ClusterFinchApp).
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// name of the app.
	// +required
	Name string `json:"name"`
}

// ConnectionCounts counts FinchConnections by phase.
type ConnectionCounts struct {
	// total number of FinchConnections that reference this app, leaving out those being deleted
	// (as every count here). Counts follow a change within a few seconds.
	// +optional
	Total int32 `json:"total"`
	// pending: no session issued yet.
	// +optional
	Pending int32 `json:"pending"`
	// awaitingConnect: a Connect URL is waiting for the employer.
	// +optional
	AwaitingConnect int32 `json:"awaitingConnect"`
	// connecting: Finch reports pending or processing.
	// +optional
	Connecting int32 `json:"connecting"`
	// connected: Finch reports the connection healthy.
	// +optional
	Connected int32 `json:"connected"`
	// reauthRequired: a re-authentication session is waiting for the employer.
	// +optional
	ReauthRequired int32 `json:"reauthRequired"`
	// error: the connection or its configuration needs attention.
	// +optional
	Error int32 `json:"error"`
	// disconnected: the connection was disconnected at Finch.
	// +optional
	Disconnected int32 `json:"disconnected"`
}

// Add counts one connection in phase p.
func (c *ConnectionCounts) Add(p Phase) {
	c.Total++
	switch p {
	case PhaseAwaitingConnect:
		c.AwaitingConnect++
	case PhaseConnecting:
		c.Connecting++
	case PhaseConnected:
		c.Connected++
	case PhaseReauthRequired:
		c.ReauthRequired++
	case PhaseError:
		c.Error++
	case PhaseDisconnected:
		c.Disconnected++
	default:
		c.Pending++
	}
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fapp,categories=finch
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Connections",type=integer,JSONPath=`.status.connections.total`
// +kubebuilder:printcolumn:name="Connected",type=integer,JSONPath=`.status.connections.connected`
// +kubebuilder:printcolumn:name="Shared",type=integer,JSONPath=`.status.finchApplication.sharedWithCount`,description="Other FinchApps and ClusterFinchApps sharing this app's Finch application and budget"
// +kubebuilder:printcolumn:name="API",type=string,JSONPath=`.spec.apiURL`,priority=1
// +kubebuilder:printcolumn:name="Rate Limited",type=string,JSONPath=`.status.conditions[?(@.type=="RateLimited")].status`,priority=1,description="True while Finch's per-IP penalty pauses every Finch call of the app"
// +kubebuilder:printcolumn:name="Callback URL",type=string,JSONPath=`.status.callbackURL`,priority=1,description="The redirect URI to allow-list in the Finch dashboard"
// +kubebuilder:printcolumn:name="Webhook URL",type=string,JSONPath=`.status.webhookURL`,priority=1,description="The webhook endpoint to register in the Finch dashboard"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// FinchApp is one Finch application (client credentials) that FinchConnections use.
type FinchApp struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired configuration of the app.
	// +required
	Spec FinchAppSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status FinchAppStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// FinchAppList contains a list of FinchApp.
type FinchAppList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FinchApp `json:"items"`
}

func init() {
	SchemeBuilder.Register(&FinchApp{}, &FinchAppList{})
}

// AppObject is what the operator reads of a FinchApp or a ClusterFinchApp.
// +kubebuilder:object:generate=false
type AppObject interface {
	metav1.Object
	runtime.Object
	// AppSpec is the app's Finch configuration.
	AppSpec() *FinchAppSpec
	// AppStatus is the status the two kinds share.
	AppStatus() *FinchAppStatus
}

// AppSpec is the app's Finch configuration.
func (a *FinchApp) AppSpec() *FinchAppSpec { return &a.Spec }

// AppStatus is the app's status.
func (a *FinchApp) AppStatus() *FinchAppStatus { return &a.Status }

// NewAppObject is an empty app of the kind key names: a FinchApp for a key
// with a namespace, a ClusterFinchApp for one without (as AppKeyOf gives them).
func NewAppObject(key types.NamespacedName) AppObject {
	if key.Namespace == "" {
		return &ClusterFinchApp{}
	}
	return &FinchApp{}
}

// AppKeyOf is the key an app is known by: namespace and name for a FinchApp,
// the name alone (no namespace) for a ClusterFinchApp.
func AppKeyOf(app AppObject) types.NamespacedName {
	return types.NamespacedName{Namespace: app.GetNamespace(), Name: app.GetName()}
}
