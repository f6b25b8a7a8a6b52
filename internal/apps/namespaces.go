package apps

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

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
