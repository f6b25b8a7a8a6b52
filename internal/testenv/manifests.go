package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// DecodeManifests reads a multi-document YAML or JSON stream (kustomize or
// helm output, config/samples) into objects, skipping empty documents, with
// numbers normalised to int64 as the API machinery reads them.
func DecodeManifests(data []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("decode manifests: %w", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		raw, err := u.MarshalJSON()
		if err != nil {
			return nil, err
		}
		n := &unstructured.Unstructured{}
		if err := n.UnmarshalJSON(raw); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
}

// EncodeManifests writes objects as one multi-document YAML stream (for
// `kubectl apply -f -`).
func EncodeManifests(objs []*unstructured.Unstructured) ([]byte, error) {
	var buf bytes.Buffer
	for _, o := range objs {
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, fmt.Errorf("encode %s/%s: %w", o.GetKind(), o.GetName(), err)
		}
		buf.WriteString("---\n")
		buf.Write(data)
	}
	return buf.Bytes(), nil
}
