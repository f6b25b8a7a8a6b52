package podrun

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// deployment is config/manager/manager.yaml's Pod spec in miniature.
func deployment(mut func(*corev1.PodSpec)) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "mgr", Namespace: "ops"},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			ServiceAccountName:            "mgr-sa",
			TerminationGracePeriodSeconds: ptr.To[int64](10),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:    "manager",
				Command: []string{"/manager"},
				Args:    []string{"--leader-elect", "--health-probe-bind-address=:8081", "--metrics-bind-address=:8080", "--metrics-bind-address=0"},
				Ports:   []corev1.ContainerPort{{Name: "health", ContainerPort: 8081}, {Name: "metrics", ContainerPort: 8080}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("health")}}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8081)}}},
				Resources: corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("512Mi")},
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")},
				},
			}},
		}}},
	}
	if mut != nil {
		mut(&d.Spec.Template.Spec)
	}
	return d
}

func TestFromDeployment(t *testing.T) {
	img := ImageConfig{User: "65532:65532"}
	p, err := FromDeployment(deployment(nil), "manager", img)
	if err != nil {
		t.Fatal(err)
	}
	run := strings.Join(p.DockerRunArgs("r1", "/sa", "127.0.0.1", "6443"), " ")
	for _, want := range []string{
		"--network host", "--entrypoint /manager", "--user 65532:65532", "--read-only", "--cap-drop ALL",
		"--security-opt no-new-privileges", "--cpus 1", "--memory 536870912 --memory-swap 536870912",
		"--cpu-shares 102", "type=bind,source=/sa,destination=" + ServiceAccountDir + ",readonly",
		"KUBERNETES_SERVICE_HOST=127.0.0.1", "KUBERNETES_SERVICE_PORT=6443",
	} {
		if !strings.Contains(run, want) {
			t.Errorf("docker run args lack %q:\n%s", want, run)
		}
	}
	if strings.Contains(run, "seccomp=") {
		t.Errorf("RuntimeDefault is the engine's default profile; got %s", run)
	}
	wantArgs := []string{"--leader-elect", "--health-probe-bind-address=127.0.0.11:8081", "--metrics-bind-address=127.0.0.11:8080", "--metrics-bind-address=0"}
	if got := p.CommandArgs("127.0.0.11"); !reflect.DeepEqual(got, wantArgs) {
		t.Errorf("CommandArgs = %q, want %q", got, wantArgs)
	}
	if *p.Liveness != (HTTPProbe{Path: "/healthz", Port: 8081, PeriodSeconds: 10, FailureThreshold: 3}) ||
		*p.Readiness != (HTTPProbe{Path: "/readyz", Port: 8081, PeriodSeconds: 10, FailureThreshold: 3}) {
		t.Errorf("probes %+v %+v", *p.Liveness, *p.Readiness)
	}
	if p.GracePeriodSeconds != 10 || p.ServiceAccount != "mgr-sa" || p.Namespace != "ops" || !p.AutomountToken {
		t.Errorf("pod %+v", p)
	}
}

func TestFromDeploymentFollowsTheManifest(t *testing.T) {
	img := ImageConfig{User: "65532:65532"}
	cases := []struct {
		name    string
		mut     func(*corev1.PodSpec)
		img     *ImageConfig
		wantRun []string // substrings of the docker run args
		lacks   []string // must not appear
		wantErr string
	}{
		{name: "writable root when the manifest allows it",
			mut:   func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.ReadOnlyRootFilesystem = nil },
			lacks: []string{"--read-only"}},
		{name: "privilege escalation allowed",
			mut:   func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true) },
			lacks: []string{"no-new-privileges"}},
		{name: "runAsUser overrides the image",
			mut:     func(s *corev1.PodSpec) { s.SecurityContext.RunAsUser = ptr.To[int64](1000) },
			wantRun: []string{"--user 1000:65532"}},
		{name: "container runAsGroup beats the pod's",
			mut: func(s *corev1.PodSpec) {
				s.SecurityContext.RunAsGroup = ptr.To[int64](1)
				s.Containers[0].SecurityContext.RunAsGroup = ptr.To[int64](2)
			},
			wantRun: []string{"--user 65532:2"}},
		{name: "bare image uid gets its own gid", img: &ImageConfig{User: "65532"},
			wantRun: []string{"--user 65532:65532"}},
		{name: "image runs as root under runAsNonRoot", img: &ImageConfig{User: ""},
			wantErr: "neither the manifest nor the image names a user"},
		{name: "image user by name under runAsNonRoot", img: &ImageConfig{User: "nonroot"},
			wantErr: `image's user "nonroot" is not numeric`},
		{name: "runAsUser 0 under runAsNonRoot",
			mut:     func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.RunAsUser = ptr.To[int64](0) },
			wantErr: "would run as uid 0"},
		{name: "unconfined seccomp",
			mut: func(s *corev1.PodSpec) {
				s.Containers[0].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
			},
			wantRun: []string{"--security-opt seccomp=unconfined"}},
		{name: "env: literal, downward API, resource limit and $(VAR) in args",
			mut: func(s *corev1.PodSpec) {
				s.Containers[0].Env = []corev1.EnvVar{
					{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}},
					{Name: "GOMAXPROCS", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
					{Name: "LOG", Value: "in-$(NS)"},
				}
				s.Containers[0].Args = append(s.Containers[0].Args, "--leader-election-namespace=$(NS)")
			},
			wantRun: []string{"--env NS=ops", "--env GOMEMLIMIT=536870912", "--env GOMAXPROCS=1", "--env LOG=in-ops"}},
		{name: "env from a Secret is refused",
			mut: func(s *corev1.PodSpec) {
				s.Containers[0].Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}}}
			},
			wantErr: "takes its value from a Secret or ConfigMap"},
		{name: "emptyDir becomes a tmpfs",
			mut: func(s *corev1.PodSpec) {
				s.Volumes = []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("64Mi"))}}}}
				s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}
			},
			wantRun: []string{"--mount type=tmpfs,destination=/tmp,tmpfs-size=67108864"}},
		{name: "other volumes are refused",
			mut: func(s *corev1.PodSpec) {
				s.Volumes = []corev1.Volume{{Name: "c", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}}}
				s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "c", MountPath: "/etc/c"}}
			},
			wantErr: "not an emptyDir"},
		{name: "probe on an undeclared port",
			mut: func(s *corev1.PodSpec) {
				s.Containers[0].LivenessProbe.HTTPGet.Port = intstr.FromString("healthz")
			},
			wantErr: `names port "healthz"`},
		{name: "an exec preStop hook is refused (the image has no shell)",
			mut: func(s *corev1.PodSpec) {
				s.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", "5"}}}}
			},
			wantErr: "only a preStop sleep action"},
		{name: "no token when automount is off",
			mut:   func(s *corev1.PodSpec) { s.AutomountServiceAccountToken = ptr.To(false) },
			lacks: []string{ServiceAccountDir}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			im := img
			if tc.img != nil {
				im = *tc.img
			}
			p, err := FromDeployment(deployment(tc.mut), "manager", im)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			run := strings.Join(slices.Concat(p.DockerRunArgs("r", "/sa", "h", "1"), p.CommandArgs("127.0.0.11")), " ")
			for _, w := range tc.wantRun {
				if !strings.Contains(run, w) {
					t.Errorf("lacks %q:\n%s", w, run)
				}
			}
			for _, w := range tc.lacks {
				if strings.Contains(run, w) {
					t.Errorf("has %q:\n%s", w, run)
				}
			}
		})
	}
	p, err := FromDeployment(deployment(func(s *corev1.PodSpec) {
		s.Containers[0].Env = []corev1.EnvVar{{Name: "NS", Value: "x"}}
		s.Containers[0].Args = []string{"--leader-election-namespace=$(NS)", "--keep=$(UNSET)"}
	}), "manager", img)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.CommandArgs("ip"); !reflect.DeepEqual(got, []string{"--leader-election-namespace=x", "--keep=$(UNSET)"}) {
		t.Errorf("args with $(VAR): %q", got)
	}
}

func TestFromDeploymentReadsPreStopSleepAndProbeTiming(t *testing.T) {
	p, err := FromDeployment(deployment(func(s *corev1.PodSpec) {
		s.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}}
		s.Containers[0].ReadinessProbe.InitialDelaySeconds = 2
		s.Containers[0].ReadinessProbe.PeriodSeconds = 1
	}), "manager", ImageConfig{User: "65532:65532"})
	if err != nil {
		t.Fatal(err)
	}
	if p.PreStopSleepSeconds != 5 {
		t.Errorf("PreStopSleepSeconds = %d, want 5", p.PreStopSleepSeconds)
	}
	if r := *p.Readiness; r.InitialDelaySeconds != 2 || r.PeriodSeconds != 1 || r.FailureThreshold != 3 {
		t.Errorf("readiness timing %+v, want delay 2, period 1, failures 3", r)
	}
}
