package v1alpha1

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Product is a Finch product (data scope) an employer grants.
// +kubebuilder:validation:Enum=benefits;company;deduction;directory;documents;employment;individual;payment;pay_statement;plans;plans_dependents;plans_enrollments;recordkeeping;ssn
type Product string

// AuthMethod is how the employer authenticates with their provider.
// +kubebuilder:validation:Enum=assisted;credential;oauth;api_token
type AuthMethod string

// Recordkeeper is a recordkeeper Finch Connect can be configured for (finch-api-node
// src/resources/connect/sessions.ts SessionNewParams.Recordkeeping.recordkeeper).
// +kubebuilder:validation:Enum=voya;empower;fidelity;transamerica
type Recordkeeper string

// SandboxMode selects a Finch sandbox for a sandbox application.
// +kubebuilder:validation:Enum=finch;provider
type SandboxMode string

// ConnectFlow says how the employer's authorization code reaches the operator.
// +kubebuilder:validation:Enum=Redirect;Embedded
type ConnectFlow string

const (
	// ConnectFlowRedirect: the employer opens status.session.connectURL and Finch Connect redirects the
	// browser to the session's redirect_uri (the operator's callback) with the code.
	ConnectFlowRedirect ConnectFlow = "Redirect"
	// ConnectFlowEmbedded: your frontend opens Finch Connect with status.session.id (the embedded SDK)
	// and your backend hands the code over in a Secret; sessions carry no redirect_uri.
	ConnectFlowEmbedded ConnectFlow = "Embedded"
)

// DeletionPolicy says what happens at Finch when a FinchConnection is deleted.
// +kubebuilder:validation:Enum=Retain;Disconnect
type DeletionPolicy string

const (
	// DeletionPolicyRetain leaves the connection at Finch untouched.
	DeletionPolicyRetain DeletionPolicy = "Retain"
	// DeletionPolicyDisconnect calls POST /disconnect before the FinchConnection goes away.
	DeletionPolicyDisconnect DeletionPolicy = "Disconnect"
)

// FinchConnectionSpec is the user's intent for one employer. The controller never writes it.
// +kubebuilder:validation:XValidation:rule="!has(self.connectFlow) || self.connectFlow != 'Embedded' || !has(self.redirectURI)",message="redirectURI is for the Redirect flow: an Embedded connection's sessions carry no redirect_uri (Finch rejects the code exchange otherwise)"
// +kubebuilder:validation:XValidation:rule="!has(self.recordkeeping) || 'recordkeeping' in self.products",message="recordkeeping can only be set when products lists recordkeeping (Finch accepts it only with that product)"
// +kubebuilder:validation:XValidation:rule="has(self.tokenSecretRef) == has(oldSelf.tokenSecretRef) && (!has(self.tokenSecretRef) || self.tokenSecretRef.name == oldSelf.tokenSecretRef.name)",message="tokenSecretRef is immutable: the token Secret of a connection cannot be moved"
type FinchConnectionSpec struct {
	// appRef names the Finch application whose credentials this connection uses: a FinchApp in the same
	// namespace (default) or a ClusterFinchApp. Immutable.
	// +kubebuilder:default={kind: FinchApp, name: default}
	// +kubebuilder:validation:XValidation:rule="self.name == oldSelf.name && (has(self.kind) ? self.kind : 'FinchApp') == (has(oldSelf.kind) ? oldSelf.kind : 'FinchApp')",message="appRef is immutable: a connection belongs to one Finch application"
	// +optional
	AppRef *AppReference `json:"appRef,omitempty"`

	// customerID is your stable, unique identifier for this employer, sent to Finch as customer_id.
	// Reuse it across retries; never change it (a new customer ID creates a duplicate connection). Immutable.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="customerID is immutable: Finch identifies the employer by it; create a new FinchConnection for another customer"
	// +required
	CustomerID string `json:"customerID"`

	// customerName is the employer's name shown in Finch Connect and the Finch dashboard.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +required
	CustomerName string `json:"customerName"`

	// customerEmail is the employer contact's email address (optional).
	// +kubebuilder:validation:MaxLength=254
	// +kubebuilder:validation:Format=email
	// +optional
	CustomerEmail string `json:"customerEmail,omitempty"`

	// products are the Finch products (data scopes) the employer is asked to grant.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	// +listType=set
	// +kubebuilder:validation:XValidation:rule="!('deduction' in self && 'benefits' in self)",message="deduction is a deprecated alias of benefits; list only one of them"
	// +required
	Products []Product `json:"products"`

	// integration preselects the provider (and auth method) shown in Finch Connect.
	// +optional
	Integration *Integration `json:"integration,omitempty"`

	// recordkeeping configures the recordkeeper (and plan) of the recordkeeping product; only with
	// recordkeeping in products. Sent as the session's recordkeeping.
	// +optional
	Recordkeeping *Recordkeeping `json:"recordkeeping,omitempty"`

	// minutesToExpire is how long each Connect session stays valid, in minutes (default 14 days).
	// The operator refreshes an unused session before it expires.
	// +kubebuilder:default=20160
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=129600
	// +optional
	MinutesToExpire int32 `json:"minutesToExpire,omitempty"`

	// connectFlow is how the employer's code comes back: Redirect (Finch Connect redirects the browser to
	// the operator's callback) or Embedded (your frontend uses the Finch Connect SDK with status.session.id
	// and hands the code over in a Secret; no redirect_uri is sent). Default: the FinchApp's
	// defaultConnectFlow, else Redirect when the app has a redirect URI or publicURL, else Embedded.
	// +optional
	ConnectFlow ConnectFlow `json:"connectFlow,omitempty"`

	// redirectURI overrides the FinchApp's redirect URI for this connection's sessions; it must be
	// allow-listed in the Finch dashboard. Use it only for your own receiver: the operator's callback
	// exchanges codes with the app's redirect URI.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''",message="redirectURI must be an http:// or https:// URL such as https://app.example.com/finch/callback"
	// +optional
	RedirectURI string `json:"redirectURI,omitempty"`

	// sandbox selects Finch's mock data (finch) or a provider's demo account (provider); sandbox apps only.
	// +optional
	Sandbox SandboxMode `json:"sandbox,omitempty"`

	// manual shows Assisted providers as well as automated ones in Finch Connect.
	// +optional
	Manual bool `json:"manual,omitempty"`

	// tokenSecretRef names the Secret that holds the access token (key access_token); default
	// <metadata.name>-finch-token. If it already holds a token when the FinchConnection is created,
	// the existing connection is adopted (migration) without a new Connect session. Immutable.
	// +optional
	TokenSecretRef *LocalObjectReference `json:"tokenSecretRef,omitempty"`

	// deletionPolicy: Retain (default) leaves the connection at Finch; Disconnect calls
	// POST /disconnect (revoking every token of the connection) before the object goes away.
	// +kubebuilder:default=Retain
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// suspend stops all Finch calls for this connection until set back to false.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// Integration preselects a provider in Finch Connect.
type Integration struct {
	// provider is the Finch provider ID, for example gusto or adp_run.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +required
	Provider string `json:"provider"`

	// authMethod preselects how the employer authenticates with the provider.
	// +optional
	AuthMethod AuthMethod `json:"authMethod,omitempty"`
}

// Recordkeeping is the recordkeeping configuration of a Connect session (finch-api-node 10.8.0
// src/resources/connect/sessions.ts SessionNewParams.Recordkeeping).
type Recordkeeping struct {
	// recordkeeper is the recordkeeper to configure: voya, empower, fidelity or transamerica.
	// +required
	Recordkeeper Recordkeeper `json:"recordkeeper"`

	// planID is the plan identifier used by the recordkeeper.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	PlanID string `json:"planID,omitempty"`
}

// Phase summarises where a FinchConnection is in its lifecycle.
// +kubebuilder:validation:Enum=Pending;AwaitingConnect;Connecting;Connected;ReauthRequired;Error;Disconnected
type Phase string

const (
	// PhasePending: nothing issued at Finch yet.
	PhasePending Phase = "Pending"
	// PhaseAwaitingConnect: a Connect session is waiting for the employer.
	PhaseAwaitingConnect Phase = "AwaitingConnect"
	// PhaseConnecting: the employer authenticated; Finch reports pending or processing.
	PhaseConnecting Phase = "Connecting"
	// PhaseConnected: Finch reports the connection connected.
	PhaseConnected Phase = "Connected"
	// PhaseReauthRequired: a re-authentication session is waiting for the employer.
	PhaseReauthRequired Phase = "ReauthRequired"
	// PhaseError: the connection or its configuration needs attention.
	PhaseError Phase = "Error"
	// PhaseDisconnected: the connection was disconnected at Finch and cannot come back.
	PhaseDisconnected Phase = "Disconnected"
)

// SessionKind says which Finch endpoint issued a session.
// +kubebuilder:validation:Enum=Connect;Reauthenticate
type SessionKind string

const (
	// SessionConnect came from POST /connect/sessions.
	SessionConnect SessionKind = "Connect"
	// SessionReauthenticate came from POST /connect/sessions/reauthenticate.
	SessionReauthenticate SessionKind = "Reauthenticate"
)

// Session is a Finch Connect session issued for this connection.
type Session struct {
	// id is Finch's session_id (pass it to the embedded Finch Connect SDK).
	ID string `json:"id"`
	// connectURL is the secure Connect link to send the employer (redirect flow).
	ConnectURL string `json:"connectURL"`
	// kind is Connect for a first connection, Reauthenticate for a re-authentication.
	Kind SessionKind `json:"kind"`
	// issuedAt is when the session was created or last refreshed.
	IssuedAt metav1.Time `json:"issuedAt"`
	// expiresAt is issuedAt plus minutesToExpire (Finch does not return an expiry).
	ExpiresAt metav1.Time `json:"expiresAt"`
	// redirectURI is the redirect_uri the session was created with ("" for the Embedded flow); the code
	// exchange sends exactly this value, as OAuth 2.0 (RFC 6749 section 4.1.3) requires.
	// +optional
	RedirectURI string `json:"redirectURI,omitempty"`
	// products are the products the session asks the employer to grant.
	// +listType=atomic
	// +optional
	Products []string `json:"products,omitempty"`
	// requestHash identifies the session parameters it was issued with; a spec change that alters
	// them refreshes the session.
	// +optional
	RequestHash string `json:"requestHash,omitempty"`
	// replacesTokenVersion is, for a reauthentication session, the resourceVersion of the token
	// Secret the reauthentication replaces: a token of another version means the employer finished it.
	// +optional
	ReplacesTokenVersion string `json:"replacesTokenVersion,omitempty"`
}

// PendingCallKind names a Finch call that must not run twice.
// +kubebuilder:validation:Enum=Reauthenticate;Disconnect
type PendingCallKind string

const (
	// PendingReauthenticate is POST /connect/sessions/reauthenticate: every call mints a new session.
	PendingReauthenticate PendingCallKind = "Reauthenticate"
	// PendingDisconnect is POST /disconnect.
	PendingDisconnect PendingCallKind = "Disconnect"
)

// PendingCall is the intent of a Finch call that is not idempotent. The operator writes it to status,
// and makes the call only once that write is confirmed; the call's result replaces it. Found without a
// result, it means the call may have happened (the operator stopped, or the status write after the call
// was lost), so the call is not repeated blindly.
type PendingCall struct {
	// kind of the call: Reauthenticate or Disconnect.
	Kind PendingCallKind `json:"kind"`
	// startedAt is when the intent was written; the call follows it.
	StartedAt metav1.Time `json:"startedAt"`
	// expiresAt is, for Reauthenticate, when the session the call may have issued expires (startedAt plus
	// minutesToExpire); no other reauthentication session is issued before then unless requested.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// redirectURI is the redirect_uri the reauthentication session is requested with, so that a code
	// from it can still be exchanged when its link was not recorded.
	// +optional
	RedirectURI string `json:"redirectURI,omitempty"`
	// replacesTokenVersion is, for Reauthenticate, the resourceVersion of the token Secret the
	// reauthentication replaces: a token of another version means the employer completed it.
	// +optional
	ReplacesTokenVersion string `json:"replacesTokenVersion,omitempty"`
}

// EntityStatus is one entity (legal employer) of a multi-entity connection.
type EntityStatus struct {
	// id is Finch's entity ID.
	ID string `json:"id"`
	// name of the entity, when Finch reports one.
	// +optional
	Name string `json:"name,omitempty"`
	// sourceID is the entity's identifier at the provider, when Finch reports one.
	// +optional
	SourceID string `json:"sourceID,omitempty"`
	// status of the entity as Finch reports it (connected, reauth, disconnected, ...).
	// +optional
	Status string `json:"status,omitempty"`
}

// ConnectionStatus is Finch's view of a connection's health.
type ConnectionStatus struct {
	// status as Finch reports it (pending, processing, connected, reauth, error_permissions,
	// error_no_account_setup, disconnected, or a newer value kept verbatim).
	Status string `json:"status"`
	// message from Finch.
	// +optional
	Message string `json:"message,omitempty"`
	// lastSuccessfulSync is when Finch last synced data for the connection.
	// +optional
	LastSuccessfulSync *metav1.Time `json:"lastSuccessfulSync,omitempty"`
	// lastSuccessfulSyncRaw is Finch's last_successful_sync verbatim when it is not a date-time (the
	// SDKs type it "date-time or any string"); lastSuccessfulSync is then unset.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	LastSuccessfulSyncRaw string `json:"lastSuccessfulSyncRaw,omitempty"`
}

// AuthenticationMethodStatus is the status of one authentication method of a connection.
type AuthenticationMethodStatus struct {
	// type of authentication (assisted, credential, api_token, api_credential, oauth).
	Type string `json:"type"`
	// status as Finch reports it.
	// +optional
	Status string `json:"status,omitempty"`
	// message from Finch.
	// +optional
	Message string `json:"message,omitempty"`
	// lastSuccessfulSync is when Finch last synced data through this authentication method.
	// +optional
	LastSuccessfulSync *metav1.Time `json:"lastSuccessfulSync,omitempty"`
	// lastSuccessfulSyncRaw is Finch's last_successful_sync for this method verbatim when it is not
	// a date-time (the SDKs type it "date-time or any string"); lastSuccessfulSync is then unset.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	LastSuccessfulSyncRaw string `json:"lastSuccessfulSyncRaw,omitempty"`
}

// InitialSyncStatus records when Finch reported the connection's first data syncs succeeded
// (the job.initial_data_sync_org.succeeded and job.initial_data_sync_payroll.succeeded webhooks,
// finch-api-node src/resources/webhooks.ts JobCompletionEvent).
type InitialSyncStatus struct {
	// organization is when the initial sync of organization data (company, directory, individual,
	// employment) succeeded.
	// +optional
	Organization *metav1.Time `json:"organization,omitempty"`
	// payroll is when the initial sync of payroll data (payment, pay_statement) succeeded.
	// +optional
	Payroll *metav1.Time `json:"payroll,omitempty"`
}

// RetryStatus records consecutive failed Finch calls so backoff survives restarts.
type RetryStatus struct {
	// failures is the number of consecutive failed attempts.
	Failures int32 `json:"failures"`
	// lastFailureTime is when the last attempt failed.
	LastFailureTime metav1.Time `json:"lastFailureTime"`
	// nextAttemptTime is the earliest time of the next attempt.
	NextAttemptTime metav1.Time `json:"nextAttemptTime"`
	// reason of the last failure (CamelCase), for example FinchUnavailable or RateLimited.
	// +optional
	Reason string `json:"reason,omitempty"`
	// observedGeneration is the generation that failed; a spec change skips the backoff.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// FinchConnectionStatus is everything the controller learned. It never holds secrets.
type FinchConnectionStatus struct {
	// observedGeneration is the generation of the spec this status reflects, set when the result is final.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Reconciling, Stalled (kstatus), Connected, ReauthRequired and DataSynced.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// phase summarises the lifecycle state.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// session is the Connect or re-authentication session currently published for the employer.
	// +optional
	Session *Session `json:"session,omitempty"`

	// pendingCall is the intent of a non-idempotent Finch call (reauthenticate, disconnect) whose result
	// is not recorded yet.
	// +optional
	PendingCall *PendingCall `json:"pendingCall,omitempty"`

	// connectionID is Finch's stable identifier of the connection.
	// +optional
	ConnectionID string `json:"connectionID,omitempty"`

	// connectionStatus is the connection's status from the last introspection or webhook.
	// +optional
	ConnectionStatus *ConnectionStatus `json:"connectionStatus,omitempty"`

	// authenticationMethods is the status of each authentication method of the connection.
	// +listType=atomic
	// +optional
	AuthenticationMethods []AuthenticationMethodStatus `json:"authenticationMethods,omitempty"`

	// entities are the entities (legal employers) of a multi-entity connection and their statuses.
	// +listType=atomic
	// +optional
	Entities []EntityStatus `json:"entities,omitempty"`

	// initialSync records when Finch's initial data syncs of the connection succeeded (webhooks);
	// condition DataSynced is True once every sync the connection's products call for has.
	// +optional
	InitialSync *InitialSyncStatus `json:"initialSync,omitempty"`

	// providerID is the payroll or HRIS provider the employer connected.
	// +optional
	ProviderID string `json:"providerID,omitempty"`

	// connectionType is finch (sandbox data) or provider.
	// +optional
	ConnectionType string `json:"connectionType,omitempty"`

	// clientType is development, production or sandbox.
	// +optional
	ClientType string `json:"clientType,omitempty"`

	// grantedProducts are the products the connection grants.
	// +listType=atomic
	// +optional
	GrantedProducts []string `json:"grantedProducts,omitempty"`

	// reauthProducts is the spec.products list a products-change re-authentication was issued for; it is
	// not issued again for the same list, even if Finch grants fewer products.
	// +listType=atomic
	// +optional
	ReauthProducts []string `json:"reauthProducts,omitempty"`

	// finchCustomerName is the customer name Finch holds for the connection (from introspection); Finch
	// cannot change it after the employer connected.
	// +optional
	FinchCustomerName string `json:"finchCustomerName,omitempty"`

	// finchCustomerEmail is the customer email Finch holds for the connection (from introspection).
	// +optional
	FinchCustomerEmail string `json:"finchCustomerEmail,omitempty"`

	// accountID is Finch's deprecated account identifier, kept for reference; use connectionID.
	// +optional
	AccountID string `json:"accountID,omitempty"`

	// companyID is Finch's deprecated company identifier, kept for reference; use connectionID.
	// +optional
	CompanyID string `json:"companyID,omitempty"`

	// tokenSecretRef names the Secret holding the access token.
	// +optional
	TokenSecretRef *LocalObjectReference `json:"tokenSecretRef,omitempty"`

	// tokenVersion identifies the token last introspected (the token Secret's resourceVersion), so a
	// new token is introspected once.
	// +optional
	TokenVersion string `json:"tokenVersion,omitempty"`

	// firstSessionTime is when the first Connect session was issued.
	// +optional
	FirstSessionTime *metav1.Time `json:"firstSessionTime,omitempty"`

	// connectedAt is when Finch first reported the connection connected.
	// +optional
	ConnectedAt *metav1.Time `json:"connectedAt,omitempty"`

	// lastIntrospectionTime is when GET /introspect last succeeded.
	// +optional
	LastIntrospectionTime *metav1.Time `json:"lastIntrospectionTime,omitempty"`

	// lastHandledReconcileAt echoes the last finch.connectops.dev/requestedAt annotation handled.
	// +optional
	LastHandledReconcileAt string `json:"lastHandledReconcileAt,omitempty"`

	// lastHandledReauthAt echoes the last finch.connectops.dev/reauthRequestedAt annotation handled.
	// +optional
	LastHandledReauthAt string `json:"lastHandledReauthAt,omitempty"`

	// lastHandledWebhookEvent echoes the last finch.connectops.dev/webhookEvent annotation handled.
	// +optional
	LastHandledWebhookEvent string `json:"lastHandledWebhookEvent,omitempty"`

	// codeExchangeError says why the last authorization code handed over was rejected.
	// +optional
	CodeExchangeError string `json:"codeExchangeError,omitempty"`

	// retry records consecutive failures of Finch calls and when the next attempt is due.
	// +optional
	Retry *RetryStatus `json:"retry,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fconn,categories=finch
// +kubebuilder:printcolumn:name="Customer",type=string,JSONPath=`.spec.customerID`
// +kubebuilder:printcolumn:name="App",type=string,JSONPath=`.spec.appRef.name`,description="The FinchApp (or, with App Kind ClusterFinchApp, the ClusterFinchApp) whose credentials the connection uses"
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,description="Why the connection is or is not Ready (the Ready condition's reason)"
// +kubebuilder:printcolumn:name="Connection",type=string,JSONPath=`.status.connectionID`
// +kubebuilder:printcolumn:name="Provider",type=string,JSONPath=`.status.providerID`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="App Kind",type=string,JSONPath=`.spec.appRef.kind`,priority=1
// +kubebuilder:printcolumn:name="Connect URL",type=string,JSONPath=`.status.session.connectURL`,priority=1
// +kubebuilder:printcolumn:name="Session Expires",type=string,JSONPath=`.status.session.expiresAt`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1

// FinchConnection is one employer's connection to Finch: the operator issues its Connect session,
// receives its token and keeps it healthy.
type FinchConnection struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired connection.
	// +required
	Spec FinchConnectionSpec `json:"spec"`

	// status is what the operator learned about the connection.
	// +optional
	Status FinchConnectionStatus `json:"status,omitempty"`
}

// TokenSecretName is the name of the Secret holding this connection's access token.
func (c *FinchConnection) TokenSecretName() string {
	if c.Spec.TokenSecretRef != nil && c.Spec.TokenSecretRef.Name != "" {
		return c.Spec.TokenSecretRef.Name
	}
	return c.Name + defaultTokenSecretSuffix
}

// defaultTokenSecretSuffix names a connection's token Secret when
// spec.tokenSecretRef is unset.
const defaultTokenSecretSuffix = "-finch-token"

// DefaultTokenSecretOwner is the FinchConnection whose default token Secret
// name is secret, if secret has that form ("" otherwise). With it, only
// connections that set spec.tokenSecretRef need an index entry to be found
// from their Secret.
func DefaultTokenSecretOwner(secret string) string {
	name, ok := strings.CutSuffix(secret, defaultTokenSecretSuffix)
	if !ok || name == "" {
		return ""
	}
	return name
}

// DefaultMinutesToExpire is the session lifetime when spec.minutesToExpire is
// unset (14 days); the CRD's +kubebuilder:default on that field says the same.
const DefaultMinutesToExpire = 20160

// SessionMinutes is how long each of this connection's sessions stays valid.
func (c *FinchConnection) SessionMinutes() int {
	if c.Spec.MinutesToExpire > 0 {
		return int(c.Spec.MinutesToExpire)
	}
	return DefaultMinutesToExpire
}

// ProductNames is spec.products as the strings Finch takes.
func (c *FinchConnection) ProductNames() []string {
	out := make([]string, len(c.Spec.Products))
	for i, p := range c.Spec.Products {
		out[i] = string(p)
	}
	return out
}

// AppName is the name of the FinchApp or ClusterFinchApp this connection uses.
func (c *FinchConnection) AppName() string {
	if c.Spec.AppRef == nil || c.Spec.AppRef.Name == "" {
		return "default"
	}
	return c.Spec.AppRef.Name
}

// AppKind is the kind of the app this connection uses: FinchApp or ClusterFinchApp.
func (c *FinchConnection) AppKind() string {
	if c.Spec.AppRef == nil || c.Spec.AppRef.Kind == "" {
		return FinchAppKind
	}
	return c.Spec.AppRef.Kind
}

// UsesClusterApp reports whether the connection uses a ClusterFinchApp.
func (c *FinchConnection) UsesClusterApp() bool { return c.AppKind() == ClusterFinchAppKind }

// AppKey is the key of the app this connection uses, as AppKeyOf gives it:
// the connection's namespace for a FinchApp, none for a ClusterFinchApp.
func (c *FinchConnection) AppKey() types.NamespacedName {
	if c.UsesClusterApp() {
		return types.NamespacedName{Name: c.AppName()}
	}
	return types.NamespacedName{Namespace: c.Namespace, Name: c.AppName()}
}

// AppDescription names the app for messages: FinchApp "x" or ClusterFinchApp "x".
func (c *FinchConnection) AppDescription() string { return DescribeApp(c.AppKey()) }

// +kubebuilder:object:root=true

// FinchConnectionList contains a list of FinchConnection.
type FinchConnectionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FinchConnection `json:"items"`
}

func init() {
	SchemeBuilder.Register(&FinchConnection{}, &FinchConnectionList{})
}
