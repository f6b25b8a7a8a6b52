package kubectlfinch_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/connectops/finch-operator/internal/testenv"
)

// TestKrewManifest checks plugins/finch.yaml against what krew's index
// requires. It is a template: `make release` (hack/release.sh) replaces
// {{VERSION}} and each {{SHA256 FILE}}; here they get stand-in values.
func TestKrewManifest(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "plugins", "finch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	raw = []byte(strings.ReplaceAll(string(raw), "{{VERSION}}", "v0.0.0"))
	raw = regexp.MustCompile(`\{\{SHA256 [^}]+\}\}`).ReplaceAll(raw, []byte(strings.Repeat("a", 64)))
	var m struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Version          string `json:"version"`
			ShortDescription string `json:"shortDescription"`
			Platforms        []struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				URI    string `json:"uri"`
				SHA256 string `json:"sha256"`
				Bin    string `json:"bin"`
			} `json:"platforms"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" || m.Metadata.Name != "finch" {
		t.Errorf("manifest is %s %s %q, want a krew Plugin named finch", m.APIVersion, m.Kind, m.Metadata.Name)
	}
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(m.Spec.Version) || m.Spec.ShortDescription == "" {
		t.Errorf("version %q, shortDescription %q", m.Spec.Version, m.Spec.ShortDescription)
	}
	sha := regexp.MustCompile(`^[0-9a-f]{64}$`)
	seen := map[string]bool{}
	for _, p := range m.Spec.Platforms {
		goos, arch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		seen[goos+"/"+arch] = true
		wantBin := "kubectl-finch"
		if goos == "windows" {
			wantBin += ".exe"
		}
		if p.Bin != wantBin || !strings.HasPrefix(p.URI, "https://") || !strings.Contains(p.URI, m.Spec.Version) || !sha.MatchString(p.SHA256) {
			t.Errorf("platform %s/%s: bin %q, uri %q, sha256 %q", goos, arch, p.Bin, p.URI, p.SHA256)
		}
	}
	for _, want := range []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64", "windows/arm64"} {
		if !seen[want] {
			t.Errorf("no %s platform", want)
		}
	}
}
