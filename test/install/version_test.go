package install_test

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// TestReleaseVersionsAgree holds the one version together: the chart's
// appVersion (vX.Y.Z) is the release; the chart's version is the same
// without the v; the chart's default image tag and version label are the
// appVersion; the Krew manifest template leaves its version, archive URLs
// and sums to `make release`, which stamps VERSION into all of them.
func TestReleaseVersionsAgree(t *testing.T) {
	var chart struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	readYAML(t, filepath.Join(chartDir, "Chart.yaml"), &chart)
	release := chart.AppVersion
	if !strings.HasPrefix(release, "v") || strings.TrimPrefix(release, "v") != chart.Version {
		t.Errorf("Chart.yaml: appVersion %q and version %q disagree (want appVersion v%s)", release, chart.Version, chart.Version)
	}

	dep := find(t, helmTemplate(t), "Deployment", "finch-operator")
	if got := dep.GetLabels()["app.kubernetes.io/version"]; got != release {
		t.Errorf("chart Deployment label app.kubernetes.io/version = %q, want %q", got, release)
	}
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	image, _ := containers[0].(map[string]any)["image"].(string)
	if !strings.HasSuffix(image, ":"+release) {
		t.Errorf("chart's default image %q is not tagged with appVersion %s (helm install would pull a tag nobody pushed)", image, release)
	}

	// The Krew manifest is a template: `make release` fills in the version
	// and the sums (dist/finch.yaml, checked by test/release), so its
	// version and every archive URL must follow the release, not spell one.
	var krew struct {
		Spec struct {
			Version   string `json:"version"`
			Platforms []struct {
				URI    string `json:"uri"`
				SHA256 string `json:"sha256"`
			} `json:"platforms"`
		} `json:"spec"`
	}
	readYAML(t, filepath.Join(root, "plugins", "finch.yaml"), &krew)
	if krew.Spec.Version != "{{VERSION}}" {
		t.Errorf("plugins/finch.yaml: version %q, want the placeholder {{VERSION}} (hack/release.sh fills it in)", krew.Spec.Version)
	}
	for _, p := range krew.Spec.Platforms {
		archive := path.Base(p.URI)
		if !strings.Contains(p.URI, "/download/{{VERSION}}/") {
			t.Errorf("plugins/finch.yaml: %s is not under /download/{{VERSION}}/", p.URI)
		}
		if want := "{{SHA256 " + archive + "}}"; p.SHA256 != want {
			t.Errorf("plugins/finch.yaml: sha256 of %s is %q, want the placeholder %s", archive, p.SHA256, want)
		}
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
