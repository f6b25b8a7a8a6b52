package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterFinchAppSpec is a FinchApp spec for the whole cluster, and the namespaces that may use it.
type ClusterFinchAppSpec struct {
	FinchAppSpec `json:",inline"`

	// conditions say which namespaces may use this app: a namespace may when it matches any one of
	// them. Without conditions every namespace may (as External Secrets' ClusterSecretStore). A
	// FinchConnection in another namespace is Stalled (NamespaceNotAllowed) and makes no Finch call.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Conditions []ClusterFinchAppCondition `json:"conditions,omitempty"`
}

// ClusterFinchAppCondition allows namespaces by label selector, by name, or both (either one matching
// is enough).
// +kubebuilder:validation:XValidation:rule="has(self.namespaceSelector) || has(self.namespaces)",message="a condition needs namespaceSelector or namespaces"
type ClusterFinchAppCondition struct {
	// namespaceSelector allows the namespaces whose labels match it.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// namespaces allows these namespaces by name.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
}

// ClusterFinchAppStatus is what the operator observed about a ClusterFinchApp.
type ClusterFinchAppStatus struct {
	FinchAppStatus `json:",inline"`

	// secretNamespace is the namespace the credentials, webhook and callback Secrets are read from
	// (the operator's cluster resource namespace, --cluster-resource-namespace).
	// +optional
	SecretNamespace string `json:"secretNamespace,omitempty"`

	// namespaceCount is the number of namespaces with FinchConnections that use this app.
	// +optional
	NamespaceCount int32 `json:"namespaceCount"`

	// namespaces counts the connections by phase per namespace: the namespaces with the most
	// connections first, at most MaxNamespaceCounts of them (connections.total counts all).
	// +kubebuilder:validation:MaxItems=50
	// +listType=map
	// +listMapKey=namespace
	// +optional
	Namespaces []NamespaceConnectionCounts `json:"namespaces,omitempty"`
}

// MaxNamespaceCounts bounds status.namespaces of a ClusterFinchApp, so the
// status stays small however many namespaces use the app.
const MaxNamespaceCounts = 50

// NamespaceConnectionCounts counts one namespace's connections of a ClusterFinchApp by phase.
type NamespaceConnectionCounts struct {
	// namespace of the connections.
	// +required
	Namespace string `json:"namespace"`

	ConnectionCounts `json:",inline"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cfapp,categories=finch
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Namespaces",type=integer,JSONPath=`.status.namespaceCount`
// +kubebuilder:printcolumn:name="Connections",type=integer,JSONPath=`.status.connections.total`
// +kubebuilder:printcolumn:name="Connected",type=integer,JSONPath=`.status.connections.connected`
// +kubebuilder:printcolumn:name="Shared",type=integer,JSONPath=`.status.finchApplication.sharedWithCount`,description="Other FinchApps and ClusterFinchApps sharing this app's Finch application and budget"
// +kubebuilder:printcolumn:name="Secrets",type=string,JSONPath=`.status.secretNamespace`,priority=1
// +kubebuilder:printcolumn:name="API",type=string,JSONPath=`.spec.apiURL`,priority=1
// +kubebuilder:printcolumn:name="Rate Limited",type=string,JSONPath=`.status.conditions[?(@.type=="RateLimited")].status`,priority=1,description="True while Finch's per-IP penalty pauses every Finch call of the app"
// +kubebuilder:printcolumn:name="Callback URL",type=string,JSONPath=`.status.callbackURL`,priority=1,description="The redirect URI to allow-list in the Finch dashboard"
// +kubebuilder:printcolumn:name="Webhook URL",type=string,JSONPath=`.status.webhookURL`,priority=1,description="The webhook endpoint to register in the Finch dashboard"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ClusterFinchApp is one Finch application (client credentials) shared by FinchConnections in the
// namespaces its conditions allow; its Secrets live in the operator's cluster resource namespace.
type ClusterFinchApp struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired configuration of the app.
	// +required
	Spec ClusterFinchAppSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status ClusterFinchAppStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ClusterFinchAppList contains a list of ClusterFinchApp.
type ClusterFinchAppList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterFinchApp `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ClusterFinchApp{}, &ClusterFinchAppList{})
}

// AppSpec is the app's Finch configuration.
func (a *ClusterFinchApp) AppSpec() *FinchAppSpec { return &a.Spec.FinchAppSpec }

// AppStatus is the status a ClusterFinchApp shares with a FinchApp.
func (a *ClusterFinchApp) AppStatus() *FinchAppStatus { return &a.Status.FinchAppStatus }
