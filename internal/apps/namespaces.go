package apps

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// Admits reports whether a namespace with these labels may use a
// ClusterFinchApp: it matches any one of conds (a condition matches by its
// selector or its list of names), or there are none (as External Secrets'
// ClusterSecretStore conditions). When it may not, rules says what the
// conditions allow, for the Stalled message.
func Admits(conds []finchv1.ClusterFinchAppCondition, namespace string, nsLabels map[string]string) (ok bool, rules string) {
	if len(conds) == 0 {
		return true, ""
	}
	var says []string
	for i, c := range conds {
		if slices.Contains(c.Namespaces, namespace) {
			return true, ""
		}
		var parts []string
		if len(c.Namespaces) > 0 {
			parts = append(parts, fmt.Sprintf("namespaces %s", strings.Join(c.Namespaces, ",")))
		}
		if c.NamespaceSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(c.NamespaceSelector)
			if err != nil {
				parts = append(parts, fmt.Sprintf("no namespace by its selector (invalid: %v)", err))
			} else {
				if sel.Matches(labels.Set(nsLabels)) {
					return true, ""
				}
				parts = append(parts, fmt.Sprintf("namespaces labelled %s", sel.String()))
			}
		}
		says = append(says, fmt.Sprintf("spec.conditions[%d] allows %s", i, strings.Join(parts, " or ")))
	}
	return false, strings.Join(says, "; ")
}

// NamespaceMeta is an empty Namespace read as metadata only (the operator
// caches no Namespace specs).
func NamespaceMeta() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}

// Admitted is Admits for a namespace read through r (its labels, as metadata).
func Admitted(ctx context.Context, r client.Reader, conds []finchv1.ClusterFinchAppCondition, namespace string) (ok bool, rules string, err error) {
	if len(conds) == 0 {
		return true, "", nil
	}
	ns := NamespaceMeta()
	if err := r.Get(ctx, types.NamespacedName{Name: namespace}, ns); err != nil {
		return false, "", fmt.Errorf("get namespace %s: %w", namespace, err)
	}
	ok, rules = Admits(conds, namespace, ns.Labels)
	return ok, rules, nil
}

// AdmittedFilter keeps the connections an app may serve: every one of a
// FinchApp; of a ClusterFinchApp, those in namespaces its conditions admit
// (one namespace read each, remembered for the filter's life; a namespace
// that cannot be read is not admitted). A connection in another namespace may
// still name the app and a customerID, but it never gets a session, so it
// must not hold a customerID against an admitted one or receive a token.
func AdmittedFilter(ctx context.Context, r client.Reader, app finchv1.AppObject) func(*finchv1.FinchConnection) bool {
	cluster, ok := app.(*finchv1.ClusterFinchApp)
	if !ok || len(cluster.Spec.Conditions) == 0 {
		return func(*finchv1.FinchConnection) bool { return true }
	}
	seen := map[string]bool{}
	return func(c *finchv1.FinchConnection) bool {
		ok, done := seen[c.Namespace]
		if !done {
			ok, _, _ = Admitted(ctx, r, cluster.Spec.Conditions, c.Namespace)
			seen[c.Namespace] = ok
		}
		return ok
	}
}
