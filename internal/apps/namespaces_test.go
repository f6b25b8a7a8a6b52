package apps

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

func TestAdmits(t *testing.T) {
	payroll := &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": "payroll"}}
	notMarketing := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "tenant", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"marketing"}},
	}}
	cases := []struct {
		name   string
		conds  []finchv1.ClusterFinchAppCondition
		ns     string
		labels map[string]string
		ok     bool
		rules  string // substring of the rules when refused
	}{
		{"no conditions: every namespace", nil, "anything", nil, true, ""},
		{"by name", []finchv1.ClusterFinchAppCondition{{Namespaces: []string{"a", "b"}}}, "b", nil, true, ""},
		{"not in the names", []finchv1.ClusterFinchAppCondition{{Namespaces: []string{"a", "b"}}}, "c", nil, false,
			"spec.conditions[0] allows namespaces a,b"},
		{"by label", []finchv1.ClusterFinchAppCondition{{NamespaceSelector: payroll}}, "x", map[string]string{"tenant": "payroll"}, true, ""},
		{"label missing", []finchv1.ClusterFinchAppCondition{{NamespaceSelector: payroll}}, "x", nil, false,
			"spec.conditions[0] allows namespaces labelled tenant=payroll"},
		{"names or selector in one condition", []finchv1.ClusterFinchAppCondition{{NamespaceSelector: payroll, Namespaces: []string{"ops"}}}, "ops", nil, true, ""},
		{"any condition admits", []finchv1.ClusterFinchAppCondition{{Namespaces: []string{"a"}}, {NamespaceSelector: payroll}}, "x", map[string]string{"tenant": "payroll"}, true, ""},
		{"every condition named when refused", []finchv1.ClusterFinchAppCondition{{Namespaces: []string{"a"}}, {NamespaceSelector: payroll}}, "x", nil, false,
			"spec.conditions[0] allows namespaces a; spec.conditions[1] allows namespaces labelled tenant=payroll"},
		{"set-based selector", []finchv1.ClusterFinchAppCondition{{NamespaceSelector: notMarketing}}, "x", map[string]string{"tenant": "marketing"}, false,
			"tenant notin (marketing)"},
		{"empty selector matches every namespace", []finchv1.ClusterFinchAppCondition{{NamespaceSelector: &metav1.LabelSelector{}}}, "x", nil, true, ""},
		{"invalid selector admits nothing", []finchv1.ClusterFinchAppCondition{{NamespaceSelector: &metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tenant", Operator: "Near"}}}}}, "x", map[string]string{"tenant": "payroll"}, false,
			"invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ok, rules := Admits(c.conds, c.ns, c.labels)
			if ok != c.ok {
				t.Fatalf("Admits = %v (%q), want %v", ok, rules, c.ok)
			}
			if !ok && !strings.Contains(rules, c.rules) {
				t.Errorf("rules = %q, want it to contain %q", rules, c.rules)
			}
		})
	}
}
