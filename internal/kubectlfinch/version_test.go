package kubectlfinch_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/connectops/finch-operator/internal/version"
)

// TestVersion reads the operator's version from its Deployment on a real API
// server, as `kubectl finch version` does on a cluster, and warns on skew.
func TestVersion(t *testing.T) {
	w := newWorld(t)
	labels := map[string]string{"app.kubernetes.io/name": "finch-operator", "app.kubernetes.io/version": "v9.9.9"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: "finch-operator", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "example.com/finch-operator:v9.9.9"}}},
			},
		},
	}
	w.create(dep)
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), dep) })

	r := w.ok("version")
	if !strings.Contains(r.stdout, "Client Version: "+version.Get().Version) {
		t.Errorf("no client version in:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "Operator Version: v9.9.9 (deployment "+w.Namespace+"/finch-operator)") {
		t.Errorf("no operator version in:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "WARNING") || !strings.Contains(r.stderr, "v9.9.9") {
		t.Errorf("no skew warning on stderr:\n%s", r.stderr)
	}

	r = w.ok("version", "--client", "-o", "json")
	var out struct {
		ClientVersion struct{ Version string } `json:"clientVersion"`
		Operators     []any                    `json:"operatorVersions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("version -o json: %v\n%s", err, r.stdout)
	}
	if out.ClientVersion.Version != version.Get().Version || len(out.Operators) != 0 || r.stderr != "" {
		t.Errorf("--client read the cluster or lost the version: %+v stderr %q", out, r.stderr)
	}
}
