// Package podrun runs a container image the way a Deployment's Pod template
// says, in a local container engine standing in for the kubelet: it turns the
// Deployment into `docker run` arguments, so a change to the manifest (args,
// env, security context, limits, mounts) changes what the tests run. Used by
// `make test-e2e` (test/e2e) and `make test-release` (test/release). It has no
// build tag: its decision table runs in `make test`.
package podrun

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// ServiceAccountDir is where the kubelet mounts a Pod's ServiceAccount token,
// CA and namespace, and where client-go's in-cluster config reads them.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Pod is what a Deployment's Pod template asks the kubelet for, reduced to
// what a container engine on one host can reproduce.
type Pod struct {
	// Namespace is the Deployment's namespace (the Pod's).
	Namespace string
	// ServiceAccount is the Pod's serviceAccountName ("default" when unset).
	ServiceAccount string
	// AutomountToken is false when the Pod opts out of the ServiceAccount token.
	AutomountToken bool
	// Entrypoint and Args are the container's command and args.
	Entrypoint []string
	Args       []string
	// Env is the container's literal environment (name=value).
	Env []string
	// User is the uid:gid the container runs as.
	User string
	// ReadOnlyRoot, NoNewPrivileges, CapDrop, CapAdd and Seccomp come from the
	// securityContexts.
	ReadOnlyRoot    bool
	NoNewPrivileges bool
	CapDrop, CapAdd []string
	Seccomp         string // "" (engine default), "unconfined"
	// CPUs and MemoryBytes are the limits; CPUShares follows the CPU request
	// as the kubelet computes it.
	CPUs        string
	MemoryBytes int64
	CPUShares   int64
	// TmpfsMounts are the emptyDir volumes, by mount path.
	TmpfsMounts []Tmpfs
	// Ports are the named container ports.
	Ports map[string]int32
	// Liveness and Readiness are the HTTP probes (path and port number).
	Liveness, Readiness *HTTPProbe
	// GracePeriodSeconds is terminationGracePeriodSeconds.
	GracePeriodSeconds int64
	// PreStopSleepSeconds is the container's preStop sleep action: the
	// kubelet waits this long (within the grace period) before SIGTERM.
	PreStopSleepSeconds int64
}

// Tmpfs is an emptyDir mount.
type Tmpfs struct {
	Path      string
	ReadOnly  bool
	SizeBytes int64 // 0: the engine's default
}

// HTTPProbe is an httpGet probe, with the kubelet's timing.
type HTTPProbe struct {
	Path string
	Port int32
	// InitialDelaySeconds, PeriodSeconds and FailureThreshold as the
	// kubelet reads them (defaults 0, 10 and 3).
	InitialDelaySeconds, PeriodSeconds, FailureThreshold int32
}

// ImageConfig is what the pod spec falls back to from the image.
type ImageConfig struct {
	// User is the image's USER ("65532:65532", "65532", "" for root).
	User string
}

// FromDeployment reads the Pod template of dep. The container named
// container is the one described. Anything the kubelet would do that this
// cannot reproduce faithfully (a Secret-backed env var, a volume other than
// emptyDir) is an error, so the test never runs something the manifest does
// not say.
func FromDeployment(dep *appsv1.Deployment, container string, img ImageConfig) (*Pod, error) {
	spec := dep.Spec.Template.Spec
	var c *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == container {
			c = &spec.Containers[i]
		}
	}
	if c == nil {
		return nil, fmt.Errorf("deployment %s has no container %q", dep.Name, container)
	}
	if len(spec.InitContainers) > 0 {
		return nil, fmt.Errorf("deployment %s has init containers, which this test does not run", dep.Name)
	}
	p := &Pod{
		Namespace:      dep.Namespace,
		ServiceAccount: spec.ServiceAccountName,
		AutomountToken: spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken,
		Entrypoint:     c.Command,
		Args:           c.Args,
		Ports:          map[string]int32{},
	}
	if p.ServiceAccount == "" {
		p.ServiceAccount = "default"
	}
	if spec.TerminationGracePeriodSeconds != nil {
		p.GracePeriodSeconds = *spec.TerminationGracePeriodSeconds
	} else {
		p.GracePeriodSeconds = corev1.DefaultTerminationGracePeriodSeconds
	}
	for _, port := range c.Ports {
		if port.Name != "" {
			p.Ports[port.Name] = port.ContainerPort
		}
	}
	if err := p.readLifecycle(c.Lifecycle); err != nil {
		return nil, err
	}
	if err := p.readSecurity(spec.SecurityContext, c.SecurityContext, img); err != nil {
		return nil, err
	}
	if err := p.readResources(c.Resources); err != nil {
		return nil, err
	}
	if err := p.readEnv(c, spec); err != nil {
		return nil, err
	}
	if err := p.readVolumes(c, spec.Volumes); err != nil {
		return nil, err
	}
	var err error
	if p.Liveness, err = p.httpProbe("liveness", c.LivenessProbe); err != nil {
		return nil, err
	}
	if p.Readiness, err = p.httpProbe("readiness", c.ReadinessProbe); err != nil {
		return nil, err
	}
	return p, nil
}

// readLifecycle reads the preStop sleep action, the one hook the test can
// run (the image has no shell for an exec hook).
func (p *Pod) readLifecycle(l *corev1.Lifecycle) error {
	if l == nil {
		return nil
	}
	if l.PostStart != nil {
		return fmt.Errorf("a postStart hook is not supported here")
	}
	if h := l.PreStop; h != nil {
		if h.Sleep == nil || h.Exec != nil || h.HTTPGet != nil || h.TCPSocket != nil {
			return fmt.Errorf("only a preStop sleep action is supported here")
		}
		p.PreStopSleepSeconds = h.Sleep.Seconds
	}
	return nil
}

func (p *Pod) readSecurity(pod *corev1.PodSecurityContext, sc *corev1.SecurityContext, img ImageConfig) error {
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	imgUID, imgGID, _ := strings.Cut(img.User, ":")
	uid := firstInt64(sc.RunAsUser, pod.RunAsUser)
	gid := firstInt64(sc.RunAsGroup, pod.RunAsGroup)
	u, g := imgUID, imgGID
	if uid != nil {
		u = strconv.FormatInt(*uid, 10)
	}
	if gid != nil {
		g = strconv.FormatInt(*gid, 10)
	}
	nonRoot := firstBool(sc.RunAsNonRoot, pod.RunAsNonRoot)
	if nonRoot != nil && *nonRoot {
		// The kubelet's check: the uid must be known and numeric, and not 0.
		n, err := strconv.ParseInt(u, 10, 64)
		switch {
		case u == "":
			return fmt.Errorf("runAsNonRoot is set but neither the manifest nor the image names a user: the kubelet would refuse to start the container")
		case err != nil:
			return fmt.Errorf("runAsNonRoot is set and the image's user %q is not numeric: the kubelet would refuse to start the container", u)
		case n == 0:
			return fmt.Errorf("runAsNonRoot is set but the container would run as uid 0: the kubelet would refuse to start it")
		}
	}
	if g == "" {
		// Docker's default group for a bare uid is 0; the kubelet's is the
		// image's or the uid's primary group. Name it explicitly.
		g = u
	}
	if u != "" {
		p.User = u + ":" + g
	}
	p.ReadOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	p.NoNewPrivileges = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
	if sc.Privileged != nil && *sc.Privileged {
		return fmt.Errorf("privileged containers are not supported here")
	}
	if caps := sc.Capabilities; caps != nil {
		for _, c := range caps.Drop {
			p.CapDrop = append(p.CapDrop, string(c))
		}
		for _, c := range caps.Add {
			p.CapAdd = append(p.CapAdd, string(c))
		}
	}
	seccomp := pod.SeccompProfile
	if sc.SeccompProfile != nil {
		seccomp = sc.SeccompProfile
	}
	if seccomp != nil {
		switch seccomp.Type {
		case corev1.SeccompProfileTypeRuntimeDefault:
		case corev1.SeccompProfileTypeUnconfined:
			p.Seccomp = "unconfined"
		default:
			return fmt.Errorf("seccomp profile type %q is not supported here", seccomp.Type)
		}
	}
	return nil
}

func (p *Pod) readResources(r corev1.ResourceRequirements) error {
	if q, ok := r.Limits[corev1.ResourceCPU]; ok {
		p.CPUs = strconv.FormatFloat(float64(q.MilliValue())/1000, 'f', -1, 64)
	}
	if q, ok := r.Limits[corev1.ResourceMemory]; ok {
		p.MemoryBytes = q.Value()
	}
	req, ok := r.Requests[corev1.ResourceCPU]
	if !ok {
		req, ok = r.Limits[corev1.ResourceCPU]
	}
	if ok {
		// pkg/kubelet/cm MilliCPUToShares: shares = milliCPU * 1024 / 1000, at least 2.
		p.CPUShares = max(req.MilliValue()*1024/1000, 2)
	}
	return nil
}

// envVarRef matches $(NAME) references, which the kubelet expands in env values.
var envVarRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func (p *Pod) readEnv(c *corev1.Container, spec corev1.PodSpec) error {
	if len(c.EnvFrom) > 0 {
		return fmt.Errorf("container %s uses envFrom, which this test cannot reproduce", c.Name)
	}
	for _, e := range c.Env {
		v := e.Value
		if s := e.ValueFrom; s != nil {
			switch {
			case s.FieldRef != nil:
				switch s.FieldRef.FieldPath {
				case "metadata.namespace":
					v = p.Namespace
				case "spec.serviceAccountName":
					v = p.ServiceAccount
				case "spec.nodeName", "metadata.name":
					v = "e2e"
				default:
					return fmt.Errorf("env %s: fieldRef %s is not supported here", e.Name, s.FieldRef.FieldPath)
				}
			case s.ResourceFieldRef != nil:
				q, err := resourceField(c.Resources, s.ResourceFieldRef)
				if err != nil {
					return fmt.Errorf("env %s: %w", e.Name, err)
				}
				v = q
			default:
				return fmt.Errorf("env %s takes its value from a Secret or ConfigMap, which this test cannot reproduce", e.Name)
			}
		}
		p.Env = append(p.Env, e.Name+"="+p.expand(v))
	}
	return nil
}

// expand replaces $(NAME) with the value of an env var defined earlier, as
// the kubelet does in env values, command and args.
func (p *Pod) expand(s string) string {
	return envVarRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := ref[2 : len(ref)-1]
		for _, prev := range p.Env {
			if k, val, _ := strings.Cut(prev, "="); k == name {
				return val
			}
		}
		return ref
	})
}

// resourceField is the kubelet's downward-API value of a resourceFieldRef
// (rounded up to whole divisors, as pkg/api/v1/resource ExtractContainerResourceValue).
func resourceField(r corev1.ResourceRequirements, ref *corev1.ResourceFieldSelector) (string, error) {
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	var q resource.Quantity
	var ok bool
	switch ref.Resource {
	case "limits.cpu":
		q, ok = r.Limits[corev1.ResourceCPU]
	case "limits.memory":
		q, ok = r.Limits[corev1.ResourceMemory]
	case "requests.cpu":
		q, ok = r.Requests[corev1.ResourceCPU]
	case "requests.memory":
		q, ok = r.Requests[corev1.ResourceMemory]
	default:
		return "", fmt.Errorf("resourceFieldRef %s is not supported here", ref.Resource)
	}
	if !ok {
		return "", fmt.Errorf("resourceFieldRef %s: the container sets no such value (the kubelet would use the node's allocatable)", ref.Resource)
	}
	if strings.HasSuffix(ref.Resource, ".cpu") {
		m := q.MilliValue()
		d := divisor.MilliValue()
		return strconv.FormatInt((m+d-1)/d, 10), nil
	}
	v, d := q.Value(), divisor.Value()
	return strconv.FormatInt((v+d-1)/d, 10), nil
}

func (p *Pod) readVolumes(c *corev1.Container, vols []corev1.Volume) error {
	byName := map[string]corev1.Volume{}
	for _, v := range vols {
		byName[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := byName[m.Name]
		if !ok {
			return fmt.Errorf("volumeMount %s names no volume", m.Name)
		}
		if v.EmptyDir == nil {
			return fmt.Errorf("volume %s is not an emptyDir; this test reproduces only emptyDir volumes", v.Name)
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			return fmt.Errorf("volumeMount %s uses subPath, which this test does not reproduce", m.Name)
		}
		t := Tmpfs{Path: m.MountPath, ReadOnly: m.ReadOnly}
		if v.EmptyDir.SizeLimit != nil {
			t.SizeBytes = v.EmptyDir.SizeLimit.Value()
		}
		p.TmpfsMounts = append(p.TmpfsMounts, t)
	}
	sort.Slice(p.TmpfsMounts, func(i, j int) bool { return p.TmpfsMounts[i].Path < p.TmpfsMounts[j].Path })
	return nil
}

func (p *Pod) httpProbe(kind string, pr *corev1.Probe) (*HTTPProbe, error) {
	if pr == nil {
		return nil, nil
	}
	if pr.HTTPGet == nil {
		return nil, fmt.Errorf("the %s probe is not an httpGet probe", kind)
	}
	h := &HTTPProbe{Path: pr.HTTPGet.Path, Port: pr.HTTPGet.Port.IntVal,
		InitialDelaySeconds: pr.InitialDelaySeconds, PeriodSeconds: pr.PeriodSeconds, FailureThreshold: pr.FailureThreshold}
	if h.PeriodSeconds == 0 {
		h.PeriodSeconds = 10
	}
	if h.FailureThreshold == 0 {
		h.FailureThreshold = 3
	}
	if port := pr.HTTPGet.Port; port.StrVal != "" {
		n, ok := p.Ports[port.StrVal]
		if !ok {
			return nil, fmt.Errorf("the %s probe names port %q, which the container does not declare", kind, port.StrVal)
		}
		h.Port = n
	}
	return h, nil
}

// wildcardPort matches a listen address with no host (":8080").
var wildcardPort = regexp.MustCompile(`^(--?[A-Za-z0-9-]+=):([0-9]+)$`)

// BindArgs returns Args with every host-less listen address (--x=:8080)
// bound to ip instead. On the host network every "Pod" shares the host's
// ports; a loopback address of its own stands in for the Pod IP, so two
// replicas can both listen on the manifest's ports.
func (p *Pod) BindArgs(ip string) []string {
	out := make([]string, len(p.Args))
	for i, a := range p.Args {
		out[i] = wildcardPort.ReplaceAllString(p.expand(a), "${1}"+ip+":$2")
	}
	return out
}

// DockerRunArgs are the `docker run` options (before the image) for the pod
// as replica name, with its Pod IP ip, the API server at apiHost:apiPort and
// the ServiceAccount files in saDir.
func (p *Pod) DockerRunArgs(name, saDir, apiHost, apiPort string) []string {
	args := []string{"--name", name, "--network", "host", "--label", "finch-operator.e2e=1"}
	if len(p.Entrypoint) > 0 {
		args = append(args, "--entrypoint", p.Entrypoint[0])
	}
	if p.User != "" {
		args = append(args, "--user", p.User)
	}
	if p.ReadOnlyRoot {
		args = append(args, "--read-only")
	}
	for _, c := range p.CapDrop {
		args = append(args, "--cap-drop", c)
	}
	for _, c := range p.CapAdd {
		args = append(args, "--cap-add", c)
	}
	if p.NoNewPrivileges {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	if p.Seccomp != "" {
		args = append(args, "--security-opt", "seccomp="+p.Seccomp)
	}
	if p.CPUs != "" {
		args = append(args, "--cpus", p.CPUs)
	}
	if p.MemoryBytes > 0 {
		// No swap beyond the limit, as on a kubelet node.
		args = append(args, "--memory", strconv.FormatInt(p.MemoryBytes, 10), "--memory-swap", strconv.FormatInt(p.MemoryBytes, 10))
	}
	if p.CPUShares > 0 {
		args = append(args, "--cpu-shares", strconv.FormatInt(p.CPUShares, 10))
	}
	for _, t := range p.TmpfsMounts {
		opt := "type=tmpfs,destination=" + t.Path
		if t.SizeBytes > 0 {
			opt += ",tmpfs-size=" + strconv.FormatInt(t.SizeBytes, 10)
		}
		if t.ReadOnly {
			opt += ",readonly"
		}
		args = append(args, "--mount", opt)
	}
	if p.AutomountToken {
		args = append(args, "--mount", "type=bind,source="+saDir+",destination="+ServiceAccountDir+",readonly")
	}
	// What the kubelet puts in every container's environment for in-cluster clients.
	args = append(args, "--env", "KUBERNETES_SERVICE_HOST="+apiHost, "--env", "KUBERNETES_SERVICE_PORT="+apiPort)
	for _, e := range p.Env {
		args = append(args, "--env", e)
	}
	return args
}

// MountPaths are where the pod's volumes are mounted in the container.
func (p *Pod) MountPaths() []string {
	var out []string
	for _, t := range p.TmpfsMounts {
		out = append(out, t.Path)
	}
	if p.AutomountToken {
		out = append(out, ServiceAccountDir)
	}
	return out
}

// CommandArgs are the arguments after the image: the rest of command, then
// args with their listen addresses bound to ip.
func (p *Pod) CommandArgs(ip string) []string {
	var out []string
	for _, a := range p.Entrypoint[min(1, len(p.Entrypoint)):] {
		out = append(out, p.expand(a))
	}
	return append(out, p.BindArgs(ip)...)
}

func firstInt64(vs ...*int64) *int64 {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

func firstBool(vs ...*bool) *bool {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}
