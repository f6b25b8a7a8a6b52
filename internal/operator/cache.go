package operator

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// CacheOptions are the manager cache settings both halves rely on: only
// Secrets labelled for a connection are cached, whole only when they are of
// the operator's token or code Secret type (others labelled so, such as a
// migrated Opaque token Secret, keep their metadata only), and managed fields
// are dropped from every cached object.
func CacheOptions() cache.Options {
	hasConn, _ := labels.NewRequirement(finchv1.ConnectionLabel, selection.Exists, nil)
	return cache.Options{
		DefaultTransform: stripForCache,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.NewSelector().Add(*hasConn)},
		},
	}
}

// lastApplied is kubectl's client-side apply annotation: a full copy of the
// object that the operator never reads.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// stripForCache drops what the operator never reads from cached objects:
// managed fields and kubectl's last-applied copy (which would double the
// memory of every FinchConnection applied with client-side kubectl apply).
func stripForCache(in any) (any, error) {
	out, err := cache.TransformStripManagedFields()(in)
	if obj, ok := out.(client.Object); ok && err == nil {
		if a := obj.GetAnnotations(); a[lastApplied] != "" {
			delete(a, lastApplied)
			obj.SetAnnotations(a)
		}
	}
	if c, ok := out.(*finchv1.FinchConnection); ok && err == nil {
		slimConnection(c)
	}
	if s, ok := out.(*corev1.Secret); ok && err == nil && s.Type != finchv1.TokenSecretType && s.Type != finchv1.CodeSecretType {
		// Anyone who may label a Secret could otherwise have any Secret
		// (of any size) held in the operator's memory; readers of such a
		// Secret's data go to the API server (tokens.Reader.Token).
		s.Data, s.StringData = nil, nil
	}
	return out, err
}

// slimConnection makes a cached FinchConnection cheaper to hold (about 0.6
// KiB of 3.5 at 10,000 connections; docs/benchmarks.md):
//   - status.session.connectURL is dropped. The operator writes it with every
//     new session and never reads it back, and a status patch computed from
//     the cached copy leaves it alone (both sides lack it). Clients read the
//     API server, not this cache.
//   - Strings every connection repeats (namespace, condition types and
//     reasons, products, enums) share one copy instead of one per object.
//   - Slices decoded with spare capacity are trimmed.
func slimConnection(c *finchv1.FinchConnection) {
	c.Namespace = intern(c.Namespace)
	c.Finalizers = internAll(c.Finalizers)
	if c.Spec.AppRef != nil {
		c.Spec.AppRef.Name = intern(c.Spec.AppRef.Name)
	}
	c.Spec.Products = internProducts(c.Spec.Products)
	c.Spec.ConnectFlow = finchv1.ConnectFlow(intern(string(c.Spec.ConnectFlow)))
	c.Spec.Sandbox = finchv1.SandboxMode(intern(string(c.Spec.Sandbox)))
	c.Spec.DeletionPolicy = finchv1.DeletionPolicy(intern(string(c.Spec.DeletionPolicy)))
	c.Spec.RedirectURI = intern(c.Spec.RedirectURI)
	st := &c.Status
	st.Phase = finchv1.Phase(intern(string(st.Phase)))
	if len(st.Conditions) > 0 {
		conds := make([]metav1.Condition, len(st.Conditions))
		for i, cond := range st.Conditions {
			cond.Type, cond.Reason = intern(cond.Type), intern(cond.Reason)
			cond.Status = metav1.ConditionStatus(intern(string(cond.Status)))
			conds[i] = cond
		}
		st.Conditions = conds
	}
	if s := st.Session; s != nil {
		s.ConnectURL = ""
		s.Kind = finchv1.SessionKind(intern(string(s.Kind)))
		s.RedirectURI = intern(s.RedirectURI)
		s.Products = internAll(s.Products)
	}
	st.GrantedProducts = internAll(st.GrantedProducts)
	st.ReauthProducts = internAll(st.ReauthProducts)
	st.ProviderID = intern(st.ProviderID)
	st.ConnectionType = intern(st.ConnectionType)
	st.ClientType = intern(st.ClientType)
}

// interned holds one copy of each short string the cache repeats. It is
// bounded: past internLimit values (many namespaces or providers) new ones
// are simply not shared.
var interned = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

const internLimit = 4096

func intern(s string) string {
	if s == "" || len(s) > 64 {
		return s
	}
	interned.Lock()
	defer interned.Unlock()
	if v, ok := interned.m[s]; ok {
		return v
	}
	if len(interned.m) < internLimit {
		interned.m[s] = s
	}
	return s
}

func internAll(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = intern(s)
	}
	return out
}

func internProducts(ps []finchv1.Product) []finchv1.Product {
	if len(ps) == 0 {
		return nil
	}
	out := make([]finchv1.Product, len(ps))
	for i, p := range ps {
		out[i] = finchv1.Product(intern(string(p)))
	}
	return out
}
