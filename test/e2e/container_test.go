//go:build e2e

package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// dockerTimeout bounds every docker CLI call, so a wedged engine fails the
// run instead of hanging it.
const dockerTimeout = 2 * time.Minute

func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// imageConfig is the part of `docker image inspect` the test reads.
type imageConfig struct {
	Size   int64
	Config struct {
		User       string
		Entrypoint []string
		Cmd        []string
		Env        []string
		Labels     map[string]string
	}
}

func inspectImage(image string) (*imageConfig, error) {
	out, err := docker("image", "inspect", image)
	if err != nil {
		return nil, err
	}
	var imgs []imageConfig
	if err := json.Unmarshal([]byte(out), &imgs); err != nil {
		return nil, fmt.Errorf("docker image inspect %s: %w", image, err)
	}
	if len(imgs) != 1 {
		return nil, fmt.Errorf("docker image inspect %s: %d images", image, len(imgs))
	}
	return &imgs[0], nil
}

// imageFiles is what the image's filesystem holds, read from `docker export`.
type imageFiles struct {
	executables []string          // regular files with an execute bit
	unexpected  []string          // files outside allowedFiles
	counts      map[string]int    // files per allowed group
	binary      []byte            // /manager
	modes       map[string]uint32 // mode bits by path, for the report
}

// allowedFiles are the groups of files a manager image may hold: the
// binary, CA certificates, tzdata, the base's user database and package
// metadata (distroless ships licences and dpkg status files), and the files
// the engine itself adds to every container.
var allowedFiles = []struct {
	group   string
	pattern *regexp.Regexp
}{
	{"binary", regexp.MustCompile(`^manager$`)},
	{"license", regexp.MustCompile(`^LICENSE$`)},
	{"CA certificates", regexp.MustCompile(`^(etc/ssl/certs/|etc/pki/|usr/share/ca-certificates/)`)},
	{"tzdata", regexp.MustCompile(`^usr/share/zoneinfo/`)},
	{"users and groups", regexp.MustCompile(`^etc/(passwd|group|nsswitch\.conf)$`)},
	{"base metadata", regexp.MustCompile(`^(etc/os-release|usr/lib/os-release|usr/share/doc/|var/lib/dpkg/status\.d/)`)},
}

// exportImage reads the image's filesystem from `docker save`: its layers
// applied in order (whiteouts remove), without the files the engine adds to
// a container.
func exportImage(image string) (*imageFiles, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	var errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", "save", image)
	cmd.Stderr = &errb
	saved, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("docker save %s: %w: %s", image, err, errb.String())
	}
	members := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(saved))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("docker save %s: %w", image, err)
		}
		if h.Typeflag == tar.TypeReg {
			if members[h.Name], err = io.ReadAll(tr); err != nil {
				return nil, err
			}
		}
	}
	var manifest []struct{ Layers []string }
	if err := json.Unmarshal(members["manifest.json"], &manifest); err != nil {
		return nil, fmt.Errorf("docker save %s: manifest.json: %w", image, err)
	}
	if len(manifest) != 1 {
		return nil, fmt.Errorf("docker save %s: manifest.json lists %d images", image, len(manifest))
	}
	type entry struct {
		mode int64
		data []byte
	}
	fs := map[string]entry{}
	for _, layer := range manifest[0].Layers {
		lr := tar.NewReader(bytes.NewReader(members[layer]))
		for {
			h, err := lr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", layer, err)
			}
			name := strings.TrimPrefix(path.Clean(h.Name), "./")
			dir, base := path.Split(name)
			if strings.HasPrefix(base, ".wh.") {
				gone := path.Join(dir, strings.TrimPrefix(base, ".wh."))
				for k := range fs {
					if k == gone || strings.HasPrefix(k, gone+"/") || (base == ".wh..wh..opq" && strings.HasPrefix(k, dir)) {
						delete(fs, k)
					}
				}
				continue
			}
			if h.Typeflag != tar.TypeReg {
				delete(fs, name)
				continue
			}
			var data []byte
			if name == "manager" {
				if data, err = io.ReadAll(lr); err != nil {
					return nil, err
				}
			}
			fs[name] = entry{mode: h.Mode, data: data}
		}
	}
	f := &imageFiles{counts: map[string]int{}, modes: map[string]uint32{}}
	for name, en := range fs {
		f.modes[name] = uint32(en.mode)
		if en.mode&0o111 != 0 {
			f.executables = append(f.executables, "/"+name)
		}
		group := ""
		for _, a := range allowedFiles {
			if a.pattern.MatchString(name) {
				group = a.group
				break
			}
		}
		if group == "" {
			f.unexpected = append(f.unexpected, "/"+name)
		} else {
			f.counts[group]++
		}
		if name == "manager" {
			f.binary = en.data
		}
	}
	sort.Strings(f.executables)
	sort.Strings(f.unexpected)
	return f, nil
}

// staticELF says whether b is an ELF executable with no program interpreter
// (a static binary that needs no libc in the image).
func staticELF(b []byte) (bool, error) {
	e, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false, err
	}
	defer func() { _ = e.Close() }()
	for _, p := range e.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// replica is one manager container, run as one Pod of the Deployment.
type replica struct {
	name    string
	mounts  []string // mount destinations: the engine creates them and their parents
	ip      string   // its stand-in Pod IP on loopback
	logPath string

	mu      sync.Mutex
	log     bytes.Buffer
	stopped bool // stopped on purpose: not running is expected
	follow  *exec.Cmd
}

// forbiddenRE matches an RBAC denial in the manager's log (console or JSON
// encoded, so quotes may be escaped).
var forbiddenRE = regexp.MustCompile(`forbidden: User \\?"([^"\\]+)\\?" cannot (\w+) resource \\?"([^"\\]+)\\?" in API group \\?"([^"\\]*)\\?"( in the namespace \\?"([^"\\]+)\\?"| at the cluster scope)?`)

// readOnlyRE matches a write the read-only root filesystem refused.
var readOnlyRE = regexp.MustCompile(`(/[^\s"\\:]*)\\?"?: read-only file system`)

// startReplica runs the image as a Pod of pod would run it, and follows its log.
func startReplica(t *testing.T, pod *Pod, image, name, ip, saDir, apiHost, apiPort, logDir string) *replica {
	t.Helper()
	_, _ = docker("rm", "-f", name)
	args := append([]string{"run", "--detach"}, pod.DockerRunArgs(name, saDir, apiHost, apiPort)...)
	args = append(args, image)
	args = append(args, pod.CommandArgs(ip)...)
	logf("docker %s", strings.Join(args, " "))
	if _, err := docker(args...); err != nil {
		t.Fatalf("start replica %s: %v", name, err)
	}
	r := &replica{name: name, ip: ip, logPath: filepath.Join(logDir, name+".log"), mounts: pod.MountPaths()}
	t.Cleanup(func() { r.remove(t) })
	lf, err := os.Create(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	r.follow = exec.Command("docker", "logs", "--follow", name)
	pr, pw := io.Pipe()
	r.follow.Stdout, r.follow.Stderr = pw, pw
	if err := r.follow.Start(); err != nil {
		t.Fatalf("follow the log of %s: %v", name, err)
	}
	go func() { _ = r.follow.Wait(); _ = pw.Close() }()
	go func() {
		defer func() { _ = lf.Close() }()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text() + "\n"
			_, _ = lf.WriteString(line)
			r.mu.Lock()
			r.log.WriteString(line)
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *replica) logText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

// problem names the first thing wrong with the replica that the story must
// not wait out: an RBAC denial, a refused write, or an unexpected exit.
func (r *replica) problem() error {
	text := r.logText()
	if m := forbiddenRE.FindStringSubmatch(text); m != nil {
		scope := "at the cluster scope"
		if m[6] != "" {
			scope = "in namespace " + m[6]
		}
		group := m[4]
		if group == "" {
			group = `"" (core)`
		}
		return fmt.Errorf("replica %s was denied by RBAC: %s may not %s %s (API group %s) %s; the ClusterRole or Role it is bound to lacks that verb (log: %s)",
			r.name, m[1], m[2], m[3], group, scope, r.logPath)
	}
	if m := readOnlyRE.FindStringSubmatch(text); m != nil {
		return fmt.Errorf("replica %s wrote to %s on the read-only root filesystem; write only under a path the manifest mounts (an emptyDir), or not at all (log: %s)",
			r.name, m[1], r.logPath)
	}
	r.mu.Lock()
	stopped := r.stopped
	r.mu.Unlock()
	if !stopped {
		state, err := docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", r.name)
		if err == nil && !strings.HasPrefix(state, "running") {
			return fmt.Errorf("replica %s is not running (%s); last lines of its log (%s):\n%s", r.name, state, r.logPath, tail(text, 30))
		}
	}
	return nil
}

// pid is the host pid of the container's entrypoint.
func (r *replica) pid() (int, error) {
	out, err := docker("inspect", "-f", "{{.State.Pid}}", r.name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(out)
}

// procStatus reads fields of /proc/<pid>/status of the container's entrypoint.
func (r *replica) procStatus() (map[string]string, error) {
	pid, err := r.pid()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m, nil
}

// environ is the environment of the container's entrypoint.
func (r *replica) environ() ([]string, error) {
	pid, err := r.pid()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), nil
}

// diff is what the container changed in its image's filesystem (`docker
// diff`), less the mount points the engine made for the manifest's mounts
// (the ServiceAccount directory, emptyDirs) and their parents.
func (r *replica) diff() ([]string, error) {
	out, err := docker("diff", r.name)
	if err != nil || out == "" {
		return nil, err
	}
	var changed []string
	for _, l := range strings.Split(out, "\n") {
		kind, p, _ := strings.Cut(l, " ")
		mountPoint := false
		for _, m := range r.mounts {
			if kind == "A" && (p == m || strings.HasPrefix(m, p+"/")) {
				mountPoint = true
			}
		}
		if !mountPoint {
			changed = append(changed, l)
		}
	}
	return changed, nil
}

// stop stops the container as the kubelet would (SIGTERM, then SIGKILL
// after the grace period) and returns its exit code.
func (r *replica) stop(grace int64) (int, error) {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	if _, err := docker("stop", "--time", strconv.FormatInt(grace, 10), r.name); err != nil {
		return -1, err
	}
	out, err := docker("inspect", "-f", "{{.State.ExitCode}}", r.name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(out)
}

func (r *replica) remove(t *testing.T) {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	if _, err := docker("rm", "-f", r.name); err != nil {
		t.Logf("remove %s: %v", r.name, err)
	}
	if r.follow != nil && r.follow.Process != nil {
		_ = r.follow.Process.Kill()
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
