package operator

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

func TestStripForCacheDropsWhatIsNeverRead(t *testing.T) {
	conn := &finchv1.FinchConnection{}
	conn.SetAnnotations(map[string]string{lastApplied: `{"big":"copy"}`, finchv1.RequestedAtAnnotation: "1"})
	conn.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "kubectl"}})
	out, err := stripForCache(conn)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*finchv1.FinchConnection)
	if _, ok := got.Annotations[lastApplied]; ok || got.ManagedFields != nil {
		t.Errorf("cached object keeps what the operator never reads: %v %v", got.Annotations, got.ManagedFields)
	}
	if got.Annotations[finchv1.RequestedAtAnnotation] != "1" {
		t.Error("the request annotation must survive the transform")
	}
}
