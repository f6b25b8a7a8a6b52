package kubectlfinch_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/kubectlfinch"
	"github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/test/live"
)

// clusterResourceNamespace holds the ClusterFinchApps' Secrets, as the
// operator's own namespace does in a cluster (--cluster-resource-namespace).
const clusterResourceNamespace = "finch-system"

func withClusterResourceNamespace(o *operator.Options) {
	o.Controllers.ClusterResourceNamespace = clusterResourceNamespace
}

func createClusterResourceNamespace(ctx context.Context, e *live.Env) error {
	return e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: clusterResourceNamespace}})
}

// newClusterApp creates a ClusterFinchApp for the world's simulator that
// admits the world's namespace, and waits until it is Ready.
func (w *world) newClusterApp() *finchv1.ClusterFinchApp {
	w.t.Helper()
	ctx := context.Background()
	creds := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "finch-credentials-", Namespace: clusterResourceNamespace},
		StringData: map[string]string{"client_id": live.ClientID, "client_secret": live.ClientSecret},
	}
	w.create(creds)
	app := &finchv1.ClusterFinchApp{
		ObjectMeta: metav1.ObjectMeta{Name: "platform-" + w.Namespace},
		Spec: finchv1.ClusterFinchAppSpec{
			FinchAppSpec: finchv1.FinchAppSpec{
				APIURL:               w.App.Spec.APIURL,
				CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: creds.Name},
				RedirectURI:          w.App.Spec.RedirectURI,
			},
			Conditions: []finchv1.ClusterFinchAppCondition{{Namespaces: []string{w.Namespace}}},
		},
	}
	w.create(app)
	w.t.Cleanup(func() {
		_ = env.Client.Delete(ctx, app)
		_ = env.Client.Delete(ctx, creds)
	})
	err := live.Poll(ctx, timeout, func() (bool, error) {
		got := &finchv1.ClusterFinchApp{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(app), got); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(got.Status.Conditions, finchv1.ConditionReady), nil
	})
	if err != nil {
		w.t.Fatalf("ClusterFinchApp %s Ready: %v", app.Name, err)
	}
	return app
}

func useClusterApp(name string) func(*finchv1.FinchConnection) {
	return func(c *finchv1.FinchConnection) {
		c.Spec.AppRef = &finchv1.AppReference{Kind: finchv1.ClusterFinchAppKind, Name: name}
	}
}

// TestClusterFinchApp: a connection of a ClusterFinchApp is told apart from
// one of a FinchApp of the same name everywhere the plugin reads or names
// the app: status, get (-o wide and --app), funnel and the next step.
func TestClusterFinchApp(t *testing.T) {
	w := newWorld(t)
	app := w.newClusterApp()
	name := app.Name
	desc := `ClusterFinchApp "` + name + `"`
	acme := w.newConn("acme", "acme-001", useClusterApp(name))

	r := w.ok("status", "acme")
	contains(t, "status acme", r.stdout, "App:", desc+" (Ready=True)", "AwaitingConnect", acme.Status.Session.ConnectURL,
		"Next step:", "kubectl finch link acme")

	r = w.ok("get", "-o", "wide")
	contains(t, "get -o wide", r.stdout, "APP", "ClusterFinchApp/"+name)
	r = w.ok("get", "--app", "ClusterFinchApp/"+name)
	contains(t, "get --app ClusterFinchApp/NAME", r.stdout, "acme-001")
	r = w.ok("get", "--app", "cfapp/"+name)
	contains(t, "get --app cfapp/NAME", r.stdout, "acme-001")
	// A bare name is a FinchApp's: none of that name here.
	r = w.ok("get", "--app", name)
	contains(t, "get --app NAME (stderr)", r.stderr, "No FinchConnections found in namespace "+w.Namespace+" for FinchApp "+name)
	r = w.plugin("", "get", "acme", "--app", "default")
	if r.err == nil || !strings.Contains(r.err.Error(), `FinchConnection "acme" uses `+desc+`, not FinchApp "default"`) {
		t.Errorf("get acme --app default: %v", r.err)
	}
	if r := w.plugin("", "get", "--app", "Deployment/x"); r.err == nil || !strings.Contains(r.err.Error(), "unknown app kind") {
		t.Errorf("get --app Deployment/x: %v", r.err)
	}

	r = w.ok("funnel")
	var row []string
	for _, l := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "ClusterFinchApp/"+name {
			row = f
		}
	}
	if got := strings.Join(row, " "); !strings.HasPrefix(got, "ClusterFinchApp/"+name+" 1 1 0 0 0 0 0") {
		t.Errorf("funnel row %q, want ClusterFinchApp/%s: 1 total, 1 awaiting\n%s", got, name, r.stdout)
	}
	contains(t, "funnel", r.stdout, "\ndefault ")
	r = w.ok("funnel", "--app", "ClusterFinchApp/"+name, "-o", "json")
	var funnels funnelList
	if err := json.Unmarshal([]byte(r.stdout), &funnels); err != nil {
		t.Fatalf("funnel -o json: %v", err)
	}
	if f := funnels.Items; len(f) != 1 || f[0].Kind != finchv1.ClusterFinchAppKind || f[0].Metadata.Name != name || f[0].Metadata.Namespace != "" || f[0].Funnel.Total != 1 {
		t.Errorf("funnel --app ClusterFinchApp/%s -o json: %+v", name, funnels)
	}

	// A missing ClusterFinchApp: status says so, and the next step what to create.
	orphan := w.Connection("orphan", "orphan-001")
	useClusterApp("nope-" + w.Namespace)(orphan)
	w.create(orphan)
	if err := live.Poll(context.Background(), timeout, func() (bool, error) {
		c := w.get("orphan")
		ready := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady)
		return ready != nil && ready.Reason == finchv1.ReasonAppNotFound, nil
	}); err != nil {
		t.Fatalf("orphan did not report %s (conditions %v): %v", finchv1.ReasonAppNotFound, w.get("orphan").Status.Conditions, err)
	}
	r = w.ok("status", "orphan")
	contains(t, "status orphan", r.stdout, `ClusterFinchApp "nope-`+w.Namespace+`" (not found)`,
		`create ClusterFinchApp "nope-`+w.Namespace+`" (cluster-scoped), or fix spec.appRef`)

	// A namespace the ClusterFinchApp does not admit: Stalled, and the next
	// step says whom to ask.
	outside := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "outside-"}}
	w.create(outside)
	outsider := w.Connection("outsider", "outsider-001")
	outsider.Namespace = outside.Name
	useClusterApp(name)(outsider)
	w.create(outsider)
	if err := live.Poll(context.Background(), timeout, func() (bool, error) {
		c := &finchv1.FinchConnection{}
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(outsider), c); err != nil {
			return false, err
		}
		stalled := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionStalled)
		return stalled != nil && stalled.Reason == finchv1.ReasonNamespaceNotAllowed, nil
	}); err != nil {
		t.Fatalf("outsider did not stall with %s: %v", finchv1.ReasonNamespaceNotAllowed, err)
	}
	r = w.ok("status", "outsider", "-n", outside.Name)
	contains(t, "status outsider", r.stdout, desc+" (Ready=True)", finchv1.ReasonNamespaceNotAllowed,
		desc+" does not allow this namespace: ask its owner to add it to spec.conditions")

	// A tenant allowed to read its connections but no cluster-scoped kind:
	// status says what reading the ClusterFinchApp takes.
	tenant := "tenant-" + w.Namespace
	w.grantConnectionReader(tenant)
	// RBAC takes effect once the API server's informers see the binding.
	if err := live.Poll(context.Background(), timeout, func() (bool, error) {
		var out, errOut strings.Builder
		cmd := kubectlfinch.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		cmd.SetArgs([]string{"--kubeconfig", env.Kubeconfig, "-n", w.Namespace, "--as", tenant, "get", "acme"})
		return cmd.ExecuteContext(context.Background()) == nil, nil
	}); err != nil {
		t.Fatalf("%s cannot read FinchConnection acme: %v", tenant, err)
	}
	r = w.ok("status", "acme", "--as", tenant)
	contains(t, "status acme as a tenant", r.stdout, desc+" (cannot read: Forbidden; reading a ClusterFinchApp takes a ClusterRoleBinding")
}

// grantConnectionReader lets user read the world's FinchConnections, and
// nothing else.
func (w *world) grantConnectionReader(user string) {
	w.t.Helper()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "connection-reader", Namespace: w.Namespace},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{finchv1.GroupVersion.Group},
			Resources: []string{"finchconnections"}, Verbs: []string{"get", "list"}}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "connection-reader", Namespace: w.Namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	w.create(role)
	w.create(binding)
}
