package controllers

import (
	"testing"
	"time"
	"unsafe"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// The secret metadata cache keeps only what the operator reads of a Secret
// it does not own: every other workload's Secrets cost a few hundred bytes.
func TestSecretMetadataSlimmer(t *testing.T) {
	slim := newSecretMetadataSlimmer()
	now := metav1.NewTime(time.Now())
	in := func(name string, labels map[string]string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: string([]byte("team-a")), ResourceVersion: "42", UID: "u-1",
				Labels:            labels,
				Annotations:       map[string]string{"meta.helm.sh/release-name": "x"},
				OwnerReferences:   []metav1.OwnerReference{{Name: "owner"}},
				Finalizers:        []string{"f"},
				ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "helm"}},
				CreationTimestamp: now,
				DeletionTimestamp: &now,
			},
		}
	}
	out, err := slim(in("db-password", map[string]string{"app": "db", finchv1.ConnectionLabel: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	m := out.(*metav1.PartialObjectMetadata)
	want := metav1.ObjectMeta{Name: "db-password", Namespace: "team-a", ResourceVersion: "42", DeletionTimestamp: &now,
		Labels: map[string]string{finchv1.ConnectionLabel: "acme"}}
	if m.Name != want.Name || m.Namespace != want.Namespace || m.ResourceVersion != want.ResourceVersion ||
		m.DeletionTimestamp != want.DeletionTimestamp || len(m.Labels) != 1 || m.Labels[finchv1.ConnectionLabel] != "acme" ||
		m.Annotations != nil || m.OwnerReferences != nil || m.Finalizers != nil || m.ManagedFields != nil || m.UID != "" {
		t.Errorf("slimmed to %+v, want only %+v", m.ObjectMeta, want)
	}
	if m.Kind != "Secret" || m.APIVersion != "v1" {
		t.Errorf("type %+v", m.TypeMeta)
	}
	out2, _ := slim(in("other", map[string]string{"app": "db"}))
	m2 := out2.(*metav1.PartialObjectMetadata)
	if m2.Labels != nil {
		t.Errorf("unrelated labels kept: %v", m2.Labels)
	}
	if unsafeStringData(m2.Namespace) != unsafeStringData(m.Namespace) {
		t.Error("namespace strings are not shared between objects")
	}
	tomb := toolscache.DeletedFinalStateUnknown{Key: "team-a/x"}
	if got, err := slim(tomb); err != nil || got != tomb {
		t.Errorf("tombstone: %v %v", got, err)
	}
}

func unsafeStringData(s string) *byte { return unsafe.StringData(s) }
