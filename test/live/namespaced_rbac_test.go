package live_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/test/live"
)

// unwatchedNamespace is a namespace config/namespaced does not list.
const unwatchedNamespace = "tenant-other"

// TestNamespacedInstallRBAC runs the manager with nothing but the RBAC that
// config/namespaced installs: the overlay's ServiceAccount, its leader
// election Role and RoleBinding, and the manager's Role and RoleBinding in
// each watched namespace, on an API server that authorizes with RBAC. The
// manager impersonates that ServiceAccount and is started with the overlay's
// --watch-namespaces and leader election flags. Connections in the watched
// namespaces must get their Connect sessions, one elsewhere must be left
// alone, and the API server must never have answered the manager 403: that is
// what shows the namespaced Roles are enough.
func TestNamespacedInstallRBAC(t *testing.T) {
	objs := renderNamespacedOverlay(t)

	var sa *unstructured.Unstructured
	var rbac []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount":
			if sa != nil {
				t.Fatalf("config/namespaced renders two ServiceAccounts: %s/%s and %s/%s", sa.GetNamespace(), sa.GetName(), o.GetNamespace(), o.GetName())
			}
			sa = o
			rbac = append(rbac, o)
		case "Namespace", "Role", "RoleBinding":
			rbac = append(rbac, o)
		case "ClusterRoleBinding":
			t.Errorf("config/namespaced renders ClusterRoleBinding %s: a namespaced install binds no ClusterRole", o.GetName())
		}
	}
	if sa == nil {
		t.Fatal("config/namespaced renders no ServiceAccount")
	}
	operatorNS, saName := sa.GetNamespace(), sa.GetName()

	// The manager's flags as the overlay's Deployment passes them.
	args := managerArgs(t, objs)
	var flags operator.Options
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	flags.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("the overlay's manager args %v: %v", args, err)
	}
	if err := flags.Complete(); err != nil {
		t.Fatalf("the overlay's manager args %v: %v", args, err)
	}
	watched := flags.Controllers.WatchNamespaces
	if len(watched) == 0 {
		t.Fatalf("the overlay's manager args %v set no --watch-namespaces", args)
	}
	if slices.Contains(watched, unwatchedNamespace) {
		t.Fatalf("the overlay watches %s, which this test needs unwatched", unwatchedNamespace)
	}
	for _, ns := range watched {
		if !hasObject(objs, "Role", ns) || !hasObject(objs, "RoleBinding", ns) {
			t.Errorf("config/namespaced watches %s but renders no Role and RoleBinding there", ns)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	impersonate := live.ImpersonateServiceAccount(operatorNS, saName)
	forbidden := &live.ForbiddenLog{}
	worlds := map[string]*live.World{}
	var other *live.World
	env, err := live.StartOptions(live.Options{
		Manager: func(o *operator.Options) {
			o.Controllers.WatchNamespaces = watched
			o.Manager.LeaderElection = flags.Manager.LeaderElection
			o.Manager.LeaderElectionID = flags.Manager.LeaderElectionID
			// In the cluster the Lease goes to the pod's namespace, and so do
			// the Finch applications' budget ConfigMaps (the cluster resource
			// namespace defaults to it).
			o.Manager.LeaderElectionNamespace = operatorNS
			o.Controllers.ClusterResourceNamespace = operatorNS
			// Other tests of this package start managers in the same process.
			o.Manager.Controller.SkipNameValidation = ptr.To(true)
		},
		Setup: func(ctx context.Context, e *live.Env) error {
			// The watched namespaces (with a simulator, credentials and a
			// FinchApp each) exist before the Roles that go into them.
			for _, ns := range watched {
				w, err := e.NewWorldIn(ctx, 0, ns)
				if err != nil {
					return err
				}
				worlds[ns] = w
			}
			var err error
			if other, err = e.NewWorldIn(ctx, 0, unwatchedNamespace); err != nil {
				return err
			}
			for _, o := range rbac {
				if err := e.Client.Create(ctx, o.DeepCopy()); err != nil {
					return err
				}
			}
			return waitForRBAC(ctx, impersonate(e.Config), operatorNS, watched)
		},
		ManagerConfig: func(cfg *rest.Config) *rest.Config { return forbidden.Wrap(impersonate(cfg)) },
	})
	for _, w := range worlds {
		defer w.Close()
	}
	if other != nil {
		defer other.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = env.Stop()
		}
	})
	ctx := context.Background()

	// RBAC is in force: the ServiceAccount may not read Secrets outside the
	// watched namespaces, so the run below is no walk-over.
	saClient, err := client.New(impersonate(env.Config), client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{unwatchedNamespace, ""} {
		err := saClient.List(ctx, &corev1.SecretList{}, client.InNamespace(ns))
		if !apierrors.IsForbidden(err) {
			t.Fatalf("%s listing Secrets in namespace %q: %v, want Forbidden (is the API server authorizing with RBAC?)", saName, ns, err)
		}
	}

	// A connection in the unwatched namespace first, then one in each watched
	// namespace.
	if err := env.Client.Create(ctx, other.Connection("acme", "acme-001")); err != nil {
		t.Fatal(err)
	}
	for _, ns := range watched {
		if err := env.Client.Create(ctx, worlds[ns].Connection("acme", "acme-001")); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range watched {
		w := worlds[ns]
		err := live.Poll(ctx, 2*time.Minute, func() (bool, error) {
			app := &finchv1.FinchApp{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(w.App), app); err != nil {
				return false, err
			}
			return meta.IsStatusConditionTrue(app.Status.Conditions, finchv1.ConditionReady), nil
		})
		if err != nil {
			t.Fatalf("FinchApp %s/default did not become Ready: %v (403s so far: %v)", ns, err, forbidden.Requests())
		}
		err = live.Poll(ctx, 2*time.Minute, func() (bool, error) {
			c := &finchv1.FinchConnection{}
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "acme"}, c); err != nil {
				return false, err
			}
			return c.Status.Phase == finchv1.PhaseAwaitingConnect && c.Status.Session != nil, nil
		})
		if err != nil {
			t.Fatalf("connection %s/acme did not reach AwaitingConnect with a session: %v (403s so far: %v)", ns, err, forbidden.Requests())
		}
		if n := w.Sim.Calls("POST /connect/sessions"); n != 1 {
			t.Errorf("the Finch of %s got %d session calls, want 1", ns, n)
		}
	}

	// Each watched namespace's FinchApp names its own simulator, so its own
	// Finch application, whose budget ConfigMap is in the operator's namespace.
	for _, ns := range watched {
		app := &finchv1.FinchApp{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(worlds[ns].App), app); err != nil {
			t.Fatal(err)
		}
		if fa := app.Status.FinchApplication; fa == nil || fa.BudgetConfigMap == "" {
			t.Errorf("FinchApp %s/default shows no budget ConfigMap: %+v", ns, fa)
		} else if err := env.Client.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: fa.BudgetConfigMap}, &corev1.ConfigMap{}); err != nil {
			t.Errorf("budget ConfigMap of FinchApp %s/default: %v", ns, err)
		}
	}

	// The manager reconciled as the leader, holding the Lease in its own
	// namespace under the leader election Role.
	if flags.Manager.LeaderElection {
		lease := &coordinationv1.Lease{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: flags.Manager.LeaderElectionID}, lease); err != nil {
			t.Errorf("leader election Lease %s/%s: %v", operatorNS, flags.Manager.LeaderElectionID, err)
		} else if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			t.Errorf("leader election Lease %s/%s has no holder", operatorNS, flags.Manager.LeaderElectionID)
		}
	}

	// The unwatched connection, created before the watched ones, is untouched;
	// any attempt to touch it would also have been a 403 (checked below).
	c := &finchv1.FinchConnection{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: unwatchedNamespace, Name: "acme"}, c); err != nil {
		t.Fatal(err)
	}
	if c.Status.Phase != "" || len(c.Finalizers) > 0 {
		t.Errorf("a connection outside --watch-namespaces was reconciled: phase %q, finalizers %v", c.Status.Phase, c.Finalizers)
	}
	app := &finchv1.FinchApp{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(other.App), app); err != nil {
		t.Fatal(err)
	}
	if len(app.Status.Conditions) > 0 {
		t.Errorf("a FinchApp outside --watch-namespaces got status: %+v", app.Status.Conditions)
	}
	if n := other.Sim.Calls("POST /connect/sessions") + other.Sim.Calls("POST /auth/token"); n != 0 {
		t.Errorf("the unwatched namespace's Finch got %d calls", n)
	}

	// Stop the manager (it releases its Lease on the way) before reading the
	// log, so every request it made is in it.
	stopped = true
	if err := env.Stop(); err != nil {
		t.Errorf("stopping: %v", err)
	}
	if reqs := forbidden.Requests(); len(reqs) > 0 {
		t.Errorf("the API server answered %d of the manager's requests 403 Forbidden; config/namespaced's Roles lack what they need:\n  %s",
			len(reqs), strings.Join(reqs, "\n  "))
	}
}

// waitForRBAC waits until the API server's RBAC authorizer has the Roles just
// created (it reads them from an informer), so the manager's first requests
// are not refused for want of a moment.
func waitForRBAC(ctx context.Context, cfg *rest.Config, operatorNS string, watched []string) error {
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		return err
	}
	return live.Poll(ctx, time.Minute, func() (bool, error) {
		checks := []error{c.List(ctx, &coordinationv1.LeaseList{}, client.InNamespace(operatorNS)),
			client.IgnoreNotFound(c.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: "finch-budget-probe"}, &corev1.ConfigMap{}))}
		for _, ns := range watched {
			checks = append(checks,
				c.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)),
				c.List(ctx, &finchv1.FinchConnectionList{}, client.InNamespace(ns)))
		}
		for _, err := range checks {
			if apierrors.IsForbidden(err) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
		}
		return true, nil
	})
}

// renderNamespacedOverlay renders config/namespaced with kubectl kustomize.
func renderNamespacedOverlay(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "config", "namespaced")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(kubectl(), "kustomize", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	objs, err := testenv.DecodeManifests(stdout.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// repoRoot walks up from the test's working directory to go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's working directory")
		}
		dir = parent
	}
}

// kubectl is the envtest control plane's kubectl, else the one on PATH.
func kubectl() string {
	if dir, err := testenv.AssetsDir(); err == nil {
		if p := filepath.Join(dir, "kubectl"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	return "kubectl"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// managerArgs are the manager container's args in the rendered Deployment.
func managerArgs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		ctrs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, raw := range ctrs {
			if c, ok := raw.(map[string]any); ok && c["name"] == "manager" {
				args, _, err := unstructured.NestedStringSlice(c, "args")
				if err != nil {
					t.Fatalf("manager args: %v", err)
				}
				return args
			}
		}
	}
	t.Fatal("config/namespaced renders no Deployment with a manager container")
	return nil
}

func hasObject(objs []*unstructured.Unstructured, kind, namespace string) bool {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == namespace {
			return true
		}
	}
	return false
}
