package finchtest

import (
	"fmt"
	"io/fs"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/connectops/finch-operator/config/crd"
)

// CRDs returns the operator's CustomResourceDefinitions (FinchApp,
// ClusterFinchApp, FinchConnection) as this version of the module ships them.
// Pass them to envtest.Environment.CRDs to start an API server with them.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := fs.Glob(crd.Bases, "bases/*.yaml")
	if err != nil {
		return nil, err
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		data, err := crd.Bases.ReadFile(f)
		if err != nil {
			return nil, err
		}
		c := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, c); err != nil {
			return nil, fmt.Errorf("CRD %s: %w", f, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// InstallCRDs creates (or updates) the operator's CRDs in the API server at
// cfg and waits until they are served.
func InstallCRDs(cfg *rest.Config) error {
	crds, err := CRDs()
	if err != nil {
		return err
	}
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{CRDs: crds}); err != nil {
		return fmt.Errorf("install the operator's CRDs: %w", err)
	}
	return nil
}
