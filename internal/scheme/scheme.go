// Package scheme is the runtime scheme of the operator: the built-in
// Kubernetes types plus the finch.connectops.dev API.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	finchv1alpha1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// Scheme has the built-in types and the operator's API.
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := finchv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()
