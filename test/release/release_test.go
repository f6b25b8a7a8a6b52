//go:build release

// Package release consumes a release the way its users do: the images and
// the chart from an OCI registry, dist/ as the GitHub release's files.
// `make test-release` (hack/test-release.sh) starts a registry on 127.0.0.1,
// runs `make release` against it, then these tests.
package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/connectops/finch-operator/internal/testenv"
)

var (
	registry    = flag.String("registry", "", "where `make release` pushed (REGISTRY, e.g. 127.0.0.1:5000/connectops)")
	version     = flag.String("version", "", "the released version (vX.Y.Z)")
	distDir     = flag.String("dist", filepath.Join(testenv.RepoRoot(), "dist"), "the release's files (`make release`)")
	helmBin     = flag.String("helm", filepath.Join(testenv.RepoRoot(), "bin", "helm"), "the helm CLI")
	craneBin    = flag.String("crane", filepath.Join(testenv.RepoRoot(), "bin", "crane"), "the crane CLI")
	krewBin     = flag.String("krew", filepath.Join(testenv.RepoRoot(), "bin", "krew"), "the krew CLI (run as `kubectl krew`)")
	stepTimeout = flag.Duration("step-timeout", 2*time.Minute, "how long each awaited state may take")
	logDir      = flag.String("log-dir", filepath.Join(testenv.RepoRoot(), "bin", "release-test"), "where container and simulator logs go")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if *registry == "" || *version == "" {
		fmt.Fprintln(os.Stderr, "test/release needs -registry and -version (run `make test-release`)")
		os.Exit(2)
	}
	os.Exit(m.Run())
}

func chartVersion() string { return strings.TrimPrefix(*version, "v") }

// run runs a command and returns its stdout; stderr goes into the error.
func run(t *testing.T, env []string, name string, args ...string) []byte {
	t.Helper()
	out, err := runErr(env, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func runErr(env []string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

func crane(t *testing.T, args ...string) []byte {
	t.Helper()
	return run(t, nil, *craneBin, args...)
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform,omitempty"`
}

type manifest struct {
	MediaType string       `json:"mediaType"`
	Manifests []descriptor `json:"manifests"`
	Config    descriptor   `json:"config"`
	Layers    []descriptor `json:"layers"`
}

var imagePlatforms = []string{"linux/amd64", "linux/arm64"}

// TestImages reads each image's index from the registry: both platforms
// under the release's tag, each with its own architecture's static,
// stripped binary and the release's labels.
func TestImages(t *testing.T) {
	for _, img := range []struct{ repo, binary string }{
		{"finch-operator", "manager"},
		{"finch-simulator", "finchsim"},
	} {
		t.Run(img.repo, func(t *testing.T) {
			ref := *registry + "/" + img.repo + ":" + *version
			var index manifest
			if err := json.Unmarshal(crane(t, "manifest", ref), &index); err != nil {
				t.Fatal(err)
			}
			if index.MediaType != "application/vnd.oci.image.index.v1+json" {
				t.Errorf("%s is a %q, want an OCI image index", ref, index.MediaType)
			}
			var got []string
			for _, d := range index.Manifests {
				if d.Platform != nil {
					got = append(got, d.Platform.OS+"/"+d.Platform.Architecture)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, imagePlatforms) {
				t.Fatalf("%s holds platforms %v, want %v", ref, got, imagePlatforms)
			}
			for _, d := range index.Manifests {
				platform := d.Platform.OS + "/" + d.Platform.Architecture
				checkPlatformImage(t, ref, *registry+"/"+img.repo+"@"+d.Digest, platform, img.binary)
			}
		})
	}
}

func checkPlatformImage(t *testing.T, indexRef, ref, platform, binary string) {
	var m manifest
	if err := json.Unmarshal(crane(t, "manifest", ref), &m); err != nil {
		t.Fatal(err)
	}
	compressed := m.Config.Size
	for _, l := range m.Layers {
		compressed += l.Size
	}
	var cfg struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Config       struct {
			User       string            `json:"User"`
			Entrypoint []string          `json:"Entrypoint"`
			Labels     map[string]string `json:"Labels"`
		} `json:"config"`
	}
	if err := json.Unmarshal(crane(t, "config", ref), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS+"/"+cfg.Architecture != platform {
		t.Errorf("%s: the %s entry's config says %s/%s", indexRef, platform, cfg.OS, cfg.Architecture)
	}
	if got := cfg.Config.Labels["org.opencontainers.image.version"]; got != *version {
		t.Errorf("%s (%s): label org.opencontainers.image.version %q, want %q", indexRef, platform, got, *version)
	}
	if got := cfg.Config.Labels["org.opencontainers.image.licenses"]; got != "Apache-2.0" {
		t.Errorf("%s (%s): label org.opencontainers.image.licenses %q, want Apache-2.0", indexRef, platform, got)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/" + binary}) || !strings.HasPrefix(cfg.Config.User, "65532") {
		t.Errorf("%s (%s): entrypoint %v as user %q, want [/%s] as 65532", indexRef, platform, cfg.Config.Entrypoint, cfg.Config.User, binary)
	}

	// The filesystem as a runtime would unpack it for this platform.
	fs, err := runErr(nil, *craneBin, "export", "--platform", platform, indexRef, "-")
	if err != nil {
		t.Fatal(err)
	}
	var bin []byte
	var unpacked int64
	tr := tar.NewReader(bytes.NewReader(fs))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		unpacked += h.Size
		if path.Clean(strings.TrimPrefix(h.Name, "/")) == binary {
			if bin, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if bin == nil {
		t.Fatalf("%s (%s) has no /%s", indexRef, platform, binary)
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("%s (%s): /%s is not an ELF binary: %v", indexRef, platform, binary, err)
	}
	want := map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64}[platform]
	if f.Machine != want {
		t.Errorf("%s (%s): /%s is built for %s, want %s", indexRef, platform, binary, f.Machine, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s (%s): /%s is dynamically linked (CGO_ENABLED=0)", indexRef, platform, binary)
		}
	}
	for _, s := range []string{".symtab", ".debug_info", ".zdebug_info"} {
		if f.Section(s) != nil {
			t.Errorf("%s (%s): /%s has a %s section: not stripped (-ldflags -s -w)", indexRef, platform, binary, s)
		}
	}
	t.Logf("%s %s: %s ELF %s, static, stripped (%.1f MiB); image %.1f MiB compressed, %.1f MiB unpacked",
		indexRef, platform, "/"+binary, f.Machine, mib(len(bin)), mib(compressed), mib(unpacked))
}

func mib[N int | int64](n N) float64 { return float64(n) / (1 << 20) }

// pluginPlatforms are the kubectl finch archives a release carries.
var pluginPlatforms = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64", "windows/arm64"}

func archiveName(platform string) string {
	return "kubectl-finch_" + strings.ReplaceAll(platform, "/", "_") + ".tar.gz"
}

// TestDistFiles checks dist/ as a user downloading the GitHub release would:
// every file is in checksums.txt with its sum, the Krew manifest names the
// archives with their real sums, each archive holds the plugin built for its
// platform with LICENSE and README, install.yaml runs the released image by
// digest, and the SBOM lists the manager's modules.
func TestDistFiles(t *testing.T) {
	want := []string{"checksums.txt", "crds.yaml", "finch-operator-" + chartVersion() + ".tgz", "finch-operator.cdx.json",
		"finch.yaml", "images.txt", "install.yaml"}
	for _, p := range pluginPlatforms {
		want = append(want, archiveName(p))
	}
	slices.Sort(want)
	entries, err := os.ReadDir(*distDir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
		info, _ := e.Info()
		t.Logf("dist/%-40s %9d bytes", e.Name(), info.Size())
	}
	if !slices.Equal(got, want) {
		t.Errorf("dist/ holds %v, want %v", got, want)
	}

	// checksums.txt: `sha256sum -c` over every other file.
	sums := map[string]string{}
	f, err := os.Open(filepath.Join(*distDir, "checksums.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Errorf("checksums.txt: line %q is not `SUM  FILE`", sc.Text())
			continue
		}
		sums[name] = sum
	}
	for _, name := range got {
		if name == "checksums.txt" {
			continue
		}
		if sums[name] == "" {
			t.Errorf("checksums.txt has no sum for %s", name)
		} else if s := sha256File(t, filepath.Join(*distDir, name)); s != sums[name] {
			t.Errorf("checksums.txt: %s has sha256 %s, the file %s", name, sums[name], s)
		}
	}

	t.Run("krew manifest", func(t *testing.T) { checkKrewManifest(t, sums) })
	t.Run("install.yaml", checkInstallYAML)
	t.Run("crds.yaml", func(t *testing.T) {
		var names []string
		for _, o := range decodeFile(t, filepath.Join(*distDir, "crds.yaml")) {
			if o.Kind == "CustomResourceDefinition" {
				names = append(names, o.Metadata.Name)
			}
		}
		slices.Sort(names)
		wantCRDs := []string{"clusterfinchapps.finch.connectops.dev", "finchapps.finch.connectops.dev", "finchconnections.finch.connectops.dev"}
		if !slices.Equal(names, wantCRDs) {
			t.Errorf("crds.yaml holds %v, want %v", names, wantCRDs)
		}
	})
	t.Run("sbom", checkSBOM)
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type krewManifest struct {
	Spec struct {
		Version   string `json:"version"`
		Platforms []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

func checkKrewManifest(t *testing.T, sums map[string]string) {
	b, err := os.ReadFile(filepath.Join(*distDir, "finch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m krewManifest
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.Spec.Version != *version {
		t.Errorf("finch.yaml: version %q, want %q", m.Spec.Version, *version)
	}
	var seen []string
	for _, p := range m.Spec.Platforms {
		platform := p.Selector.MatchLabels["os"] + "/" + p.Selector.MatchLabels["arch"]
		seen = append(seen, platform)
		name := archiveName(platform)
		wantURI := "https://github.com/connectops/finch-operator/releases/download/" + *version + "/" + name
		if p.URI != wantURI {
			t.Errorf("finch.yaml %s: uri %s, want %s", platform, p.URI, wantURI)
		}
		if p.SHA256 != sums[name] {
			t.Errorf("finch.yaml %s: sha256 %s, but %s's is %s", platform, p.SHA256, name, sums[name])
		}
		checkArchive(t, platform, filepath.Join(*distDir, name), p.Bin)
	}
	slices.Sort(seen)
	wantPlatforms := slices.Clone(pluginPlatforms)
	slices.Sort(wantPlatforms)
	if !slices.Equal(seen, wantPlatforms) {
		t.Errorf("finch.yaml: platforms %v, want %v", seen, wantPlatforms)
	}
}

// checkArchive opens a plugin archive: the binary krew links (built for the
// archive's platform), LICENSE, README.md and the completion shim when the
// repository has one.
func checkArchive(t *testing.T, platform, file, bin string) {
	f, err := os.Open(file)
	if err != nil {
		t.Error(err)
		return
	}
	defer func() { _ = f.Close() }()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Errorf("%s: %v", file, err)
		return
	}
	members := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Errorf("%s: %v", file, err)
			return
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			members[path.Clean(h.Name)] = b
			if h.Uid != 0 || h.Gid != 0 {
				t.Errorf("%s: %s is owned by %d:%d, want 0:0", file, h.Name, h.Uid, h.Gid)
			}
		}
	}
	want := []string{bin, "LICENSE", "README.md"}
	if _, err := os.Stat(filepath.Join(testenv.RepoRoot(), "plugins", "kubectl_complete-finch")); err == nil {
		want = append(want, "kubectl_complete-finch")
	}
	var names []string
	for n := range members {
		names = append(names, n)
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("%s holds %v, want %v", filepath.Base(file), names, want)
	}
	if !bytes.Contains(members["LICENSE"], []byte("Apache License")) {
		t.Errorf("%s: LICENSE is not the Apache License", filepath.Base(file))
	}
	arch, err := binaryPlatform(platform, members[bin])
	if err != nil {
		t.Errorf("%s: %s: %v", filepath.Base(file), bin, err)
	} else if arch != platform {
		t.Errorf("%s: %s is built for %s", filepath.Base(file), bin, arch)
	}
}

// binaryPlatform reads which os/arch an executable is for from its header.
func binaryPlatform(platform string, b []byte) (string, error) {
	r := bytes.NewReader(b)
	switch strings.Split(platform, "/")[0] {
	case "linux":
		f, err := elf.NewFile(r)
		if err != nil {
			return "", err
		}
		return "linux/" + map[elf.Machine]string{elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64"}[f.Machine], nil
	case "darwin":
		f, err := macho.NewFile(r)
		if err != nil {
			return "", err
		}
		return "darwin/" + map[macho.Cpu]string{macho.CpuAmd64: "amd64", macho.CpuArm64: "arm64"}[f.Cpu], nil
	case "windows":
		f, err := pe.NewFile(r)
		if err != nil {
			return "", err
		}
		return "windows/" + map[uint16]string{pe.IMAGE_FILE_MACHINE_AMD64: "amd64", pe.IMAGE_FILE_MACHINE_ARM64: "arm64"}[f.Machine], nil
	}
	return "", fmt.Errorf("unknown platform %s", platform)
}

type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		Template struct {
			Spec struct {
				Containers []struct {
					Name  string `json:"name"`
					Image string `json:"image"`
				} `json:"containers"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

func decodeFile(t *testing.T, p string) []object {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := testenv.DecodeManifests(b)
	if err != nil {
		t.Fatal(err)
	}
	var out []object
	for _, o := range objs {
		j, _ := o.MarshalJSON()
		var ob object
		if err := json.Unmarshal(j, &ob); err != nil {
			t.Fatal(err)
		}
		out = append(out, ob)
	}
	return out
}

// checkInstallYAML: the Deployment runs the release's image by the index's
// digest, so what a user applies is what was tested and cannot be re-tagged.
func checkInstallYAML(t *testing.T) {
	digest := strings.TrimSpace(string(crane(t, "digest", *registry+"/finch-operator:"+*version)))
	want := *registry + "/finch-operator@" + digest
	var images []string
	for _, o := range decodeFile(t, filepath.Join(*distDir, "install.yaml")) {
		for _, c := range o.Spec.Template.Spec.Containers {
			images = append(images, c.Image)
		}
	}
	if !slices.Equal(images, []string{want}) {
		t.Errorf("install.yaml runs %v, want [%s] (the release's index, by digest)", images, want)
	}
}

// checkSBOM: a CycloneDX document of the manager whose modules are go.mod's.
func checkSBOM(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(*distDir, "finch-operator.cdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	var bom struct {
		BOMFormat string `json:"bomFormat"`
		Metadata  struct {
			Component struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"component"`
		} `json:"metadata"`
		Components []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
			PURL    string `json:"purl"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &bom); err != nil {
		t.Fatal(err)
	}
	if bom.BOMFormat != "CycloneDX" || bom.Metadata.Component.Name != "github.com/connectops/finch-operator" {
		t.Errorf("SBOM: bomFormat %q of %q, want CycloneDX of github.com/connectops/finch-operator", bom.BOMFormat, bom.Metadata.Component.Name)
	}
	goMod, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range bom.Components {
		if c.Name == "sigs.k8s.io/controller-runtime" {
			found = true
			if !bytes.Contains(goMod, []byte("sigs.k8s.io/controller-runtime "+c.Version+"\n")) {
				t.Errorf("SBOM: controller-runtime %s is not go.mod's", c.Version)
			}
		}
	}
	if !found {
		t.Errorf("SBOM lists no sigs.k8s.io/controller-runtime among its %d components", len(bom.Components))
	}
	t.Logf("SBOM: %s %s, %d components", bom.Metadata.Component.Name, bom.Metadata.Component.Version, len(bom.Components))
}

// TestKrewInstall installs the plugin as the manifest tells krew to, with
// krew run as a kubectl plugin and its root in a temp dir, then runs the
// installed `kubectl finch version --client`.
func TestKrewInstall(t *testing.T) {
	krewRoot := t.TempDir()
	pluginDir := t.TempDir()
	// `kubectl krew` is kubectl running kubectl-krew from PATH.
	if err := os.Symlink(*krewBin, filepath.Join(pluginDir, "kubectl-krew")); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"KREW_ROOT=" + krewRoot,
		"PATH=" + filepath.Join(krewRoot, "bin") + string(os.PathListSeparator) + pluginDir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
	}
	out := run(t, env, "kubectl", "krew", "install",
		"--manifest="+filepath.Join(*distDir, "finch.yaml"),
		"--archive="+filepath.Join(*distDir, archiveName("linux/amd64")))
	t.Logf("kubectl krew install: %s", strings.TrimSpace(string(out)))
	got := run(t, env, "kubectl", "finch", "version", "--client")
	if !strings.Contains(string(got), *version) {
		t.Errorf("kubectl finch version --client printed %q, want %s", got, *version)
	}
	t.Logf("kubectl finch version --client: %s", strings.TrimSpace(string(got)))
	// krew's record of the install (`kubectl krew list` would need the index, which a
	// --manifest install does not fetch).
	receipt, err := os.ReadFile(filepath.Join(krewRoot, "receipts", "finch.yaml"))
	if err != nil || !strings.Contains(string(receipt), "version: "+*version) {
		t.Errorf("krew's receipt for finch (%v) does not record %s:\n%s", err, *version, receipt)
	}
}
