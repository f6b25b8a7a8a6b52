package v1alpha1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/testenv"
)

func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "validation-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func validConnection(ns string) *finchv1.FinchConnection {
	return &finchv1.FinchConnection{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "conn-", Namespace: ns},
		Spec: finchv1.FinchConnectionSpec{
			CustomerID:   "customer-1",
			CustomerName: "Customer One",
			Products:     []finchv1.Product{"company", "directory"},
		},
	}
}

// sampleObjects are the objects of a multi-document YAML file.
func sampleObjects(file string) []*unstructured.Unstructured {
	data, err := os.ReadFile(file)
	Expect(err).NotTo(HaveOccurred())
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			return out
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

var _ = Describe("samples in config/samples and the demo's in hack/demo/samples", func() {
	It("are accepted by the API server", func() {
		for _, dir := range []string{filepath.Join("config", "samples"), filepath.Join("hack", "demo", "samples")} {
			ns := newNamespace()
			files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), dir, "*.yaml"))
			Expect(err).NotTo(HaveOccurred())
			Expect(files).NotTo(BeEmpty())
			kinds := map[string]int{}
			for _, f := range files {
				if filepath.Base(f) == "kustomization.yaml" {
					continue
				}
				for _, u := range sampleObjects(f) {
					u.SetNamespace(ns)
					Expect(k8sClient.Create(ctx, u)).To(Succeed(), "sample %s %s/%s", f, u.GetKind(), u.GetName())
					kinds[u.GetKind()]++
				}
			}
			Expect(kinds).To(HaveKeyWithValue("FinchApp", 1), dir)
			Expect(kinds).To(HaveKeyWithValue("FinchConnection", 3), dir)
		}
	})

	It("include a ClusterFinchApp used from a tenant namespace, accepted as written", func() {
		f := filepath.Join(testenv.RepoRoot(), "config", "samples", "multi-tenant", "platform.yaml")
		kinds := map[string]int{}
		for _, u := range sampleObjects(f) {
			Expect(k8sClient.Create(ctx, u)).To(Succeed(), "sample %s %s/%s", f, u.GetKind(), u.GetName())
			kinds[u.GetKind()]++
		}
		// No Secrets: the production-shaped sample leaves the credentials to the user.
		Expect(kinds).To(Equal(map[string]int{"ClusterFinchApp": 1, "Namespace": 1, "FinchConnection": 1}))
		conn := &finchv1.FinchConnection{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "payroll-team", Name: "umbrella"}, conn)).To(Succeed())
		Expect(conn.UsesClusterApp()).To(BeTrue())
	})
})

var _ = Describe("defaults", func() {
	It("fills FinchConnection defaults from the schema", func() {
		ns := newNamespace()
		c := validConnection(ns)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.AppRef.Name).To(Equal("default"))
		Expect(c.Spec.MinutesToExpire).To(BeEquivalentTo(20160))
		Expect(c.Spec.DeletionPolicy).To(Equal(finchv1.DeletionPolicyRetain))
		Expect(c.TokenSecretName()).To(Equal(c.Name + "-finch-token"))
	})

	It("fills FinchApp defaults from the schema", func() {
		ns := newNamespace()
		app := &finchv1.FinchApp{
			ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns},
			Spec: finchv1.FinchAppSpec{
				CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "creds"},
				WebhookSecretRef:     &finchv1.WebhookSecretReference{Name: "hook"},
			},
		}
		Expect(k8sClient.Create(ctx, app)).To(Succeed())
		Expect(app.Spec.APIURL).To(Equal("https://api.tryfinch.com"))
		Expect(app.Spec.FinchAPIVersion).To(BeEmpty(), "no schema default: the deprecated apiVersion must still be read when set alone")
		Expect(app.Spec.DeprecatedAPIVersion).To(BeEmpty())
		Expect(app.Spec.FinchAPIVersionHeader()).To(BeEmpty(), "the client sends its default, 2020-09-17")
		Expect(app.Spec.CredentialsSecretRef.ClientIDKey).To(Equal("client_id"))
		Expect(app.Spec.CredentialsSecretRef.ClientSecretKey).To(Equal("client_secret"))
		Expect(app.Spec.WebhookSecretRef.Key).To(Equal("webhook_secret"))
		Expect(app.Spec.RateLimit.Requests).To(BeEquivalentTo(20))
		Expect(app.Spec.RateLimit.Window.Duration).To(Equal(time.Minute))
		Expect(app.Spec.IntrospectionInterval.Duration).To(Equal(6 * time.Hour))
	})
})

var _ = Describe("invalid FinchConnections are rejected at apply time", func() {
	DescribeTable("create",
		func(mutate func(*finchv1.FinchConnection), wantMsg string) {
			c := validConnection(newNamespace())
			mutate(c)
			err := k8sClient.Create(ctx, c)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(wantMsg))
		},
		Entry("empty products", func(c *finchv1.FinchConnection) { c.Spec.Products = []finchv1.Product{} },
			"spec.products: Invalid value: 0: spec.products in body should have at least 1 items"),
		Entry("missing products", func(c *finchv1.FinchConnection) { c.Spec.Products = nil }, "spec.products: Required value"),
		Entry("unknown product", func(c *finchv1.FinchConnection) { c.Spec.Products = []finchv1.Product{"company", "payroll"} },
			`spec.products[1]: Unsupported value: "payroll"`),
		Entry("duplicate product", func(c *finchv1.FinchConnection) { c.Spec.Products = []finchv1.Product{"company", "company"} },
			`spec.products[1]: Duplicate value: "company"`),
		Entry("deduction with benefits", func(c *finchv1.FinchConnection) { c.Spec.Products = []finchv1.Product{"benefits", "deduction"} },
			"deduction is a deprecated alias of benefits"),
		Entry("minutesToExpire negative", func(c *finchv1.FinchConnection) { c.Spec.MinutesToExpire = -5 },
			"spec.minutesToExpire: Invalid value: -5: spec.minutesToExpire in body should be greater than or equal to 1"),
		Entry("minutesToExpire 129601", func(c *finchv1.FinchConnection) { c.Spec.MinutesToExpire = 129601 },
			"spec.minutesToExpire: Invalid value: 129601: spec.minutesToExpire in body should be less than or equal to 129600"),
		Entry("unknown authMethod", func(c *finchv1.FinchConnection) {
			c.Spec.Integration = &finchv1.Integration{Provider: "gusto", AuthMethod: "password"}
		}, `spec.integration.authMethod: Unsupported value: "password"`),
		Entry("integration without provider", func(c *finchv1.FinchConnection) {
			c.Spec.Integration = &finchv1.Integration{AuthMethod: "oauth"}
		}, "spec.integration.provider"),
		Entry("customerID of 256 characters", func(c *finchv1.FinchConnection) { c.Spec.CustomerID = strings.Repeat("a", 256) },
			"spec.customerID: Too long: may not be more than 255"),
		Entry("empty customerID", func(c *finchv1.FinchConnection) { c.Spec.CustomerID = "" }, "spec.customerID"),
		Entry("empty customerName", func(c *finchv1.FinchConnection) { c.Spec.CustomerName = "" }, "spec.customerName"),
		Entry("bad customerEmail", func(c *finchv1.FinchConnection) { c.Spec.CustomerEmail = "not-an-email" },
			`spec.customerEmail: Invalid value: "not-an-email": spec.customerEmail in body must be of type email`),
		Entry("unknown sandbox", func(c *finchv1.FinchConnection) { c.Spec.Sandbox = "true" }, `spec.sandbox: Unsupported value: "true"`),
		Entry("unknown deletionPolicy", func(c *finchv1.FinchConnection) { c.Spec.DeletionPolicy = "Delete" },
			`spec.deletionPolicy: Unsupported value: "Delete"`),
		Entry("redirectURI that is not a URL", func(c *finchv1.FinchConnection) { c.Spec.RedirectURI = "example.com/cb" }, "spec.redirectURI"),
		Entry("recordkeeping without the recordkeeping product", func(c *finchv1.FinchConnection) {
			c.Spec.Recordkeeping = &finchv1.Recordkeeping{Recordkeeper: "voya"}
		}, "recordkeeping can only be set when products lists recordkeeping"),
		Entry("unknown recordkeeper", func(c *finchv1.FinchConnection) {
			c.Spec.Products = append(c.Spec.Products, "recordkeeping")
			c.Spec.Recordkeeping = &finchv1.Recordkeeping{Recordkeeper: "vanguard"}
		}, `spec.recordkeeping.recordkeeper: Unsupported value: "vanguard"`),
		Entry("recordkeeping without recordkeeper", func(c *finchv1.FinchConnection) {
			c.Spec.Products = append(c.Spec.Products, "recordkeeping")
			c.Spec.Recordkeeping = &finchv1.Recordkeeping{PlanID: "p"}
		}, "spec.recordkeeping.recordkeeper"),
	)

	It("accepts recordkeeping with the recordkeeping product, and keeps it only with the product", func() {
		c := validConnection(newNamespace())
		c.Spec.Products = []finchv1.Product{"company", "recordkeeping"}
		c.Spec.Recordkeeping = &finchv1.Recordkeeping{Recordkeeper: "transamerica", PlanID: "plan-42"}
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		c.Spec.Products = []finchv1.Product{"company"}
		err := k8sClient.Update(ctx, c)
		Expect(err).To(HaveOccurred(), "removing the product while recordkeeping stays")
		Expect(err.Error()).To(ContainSubstring("recordkeeping can only be set when products lists recordkeeping"))
	})

	It("rejects minutesToExpire 0 sent explicitly", func() {
		// A typed Go client omits a zero int; send the raw object like kubectl would.
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "finch.connectops.dev/v1alpha1", "kind": "FinchConnection",
			"metadata": map[string]any{"name": "zero", "namespace": newNamespace()},
			"spec":     map[string]any{"customerID": "c", "customerName": "C", "products": []any{"company"}, "minutesToExpire": int64(0)},
		}}
		err := k8sClient.Create(ctx, u)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("spec.minutesToExpire: Invalid value: 0: spec.minutesToExpire in body should be greater than or equal to 1"))
	})

	DescribeTable("update",
		func(mutate func(*finchv1.FinchConnection), wantMsg string) {
			c := validConnection(newNamespace())
			c.Spec.TokenSecretRef = &finchv1.LocalObjectReference{Name: "tok"}
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			mutate(c)
			err := k8sClient.Update(ctx, c)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(wantMsg))
		},
		Entry("changed customerID", func(c *finchv1.FinchConnection) { c.Spec.CustomerID = "customer-2" }, "customerID is immutable"),
		Entry("changed appRef", func(c *finchv1.FinchConnection) { c.Spec.AppRef = &finchv1.AppReference{Name: "other"} }, "appRef is immutable"),
		Entry("changed appRef.kind", func(c *finchv1.FinchConnection) {
			c.Spec.AppRef = &finchv1.AppReference{Kind: finchv1.ClusterFinchAppKind, Name: "default"}
		}, "appRef is immutable"),
		Entry("changed tokenSecretRef", func(c *finchv1.FinchConnection) { c.Spec.TokenSecretRef.Name = "other" }, "tokenSecretRef is immutable"),
		Entry("removed tokenSecretRef", func(c *finchv1.FinchConnection) { c.Spec.TokenSecretRef = nil }, "tokenSecretRef is immutable"),
	)

	It("allows changing mutable fields", func() {
		c := validConnection(newNamespace())
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		c.Spec.CustomerName = "Renamed"
		c.Spec.Products = append(c.Spec.Products, "payment")
		c.Spec.DeletionPolicy = finchv1.DeletionPolicyDisconnect
		Expect(k8sClient.Update(ctx, c)).To(Succeed())
	})
})

var _ = Describe("invalid FinchApps are rejected at apply time", func() {
	DescribeTable("create",
		func(mutate func(*finchv1.FinchApp), wantMsg string) {
			app := &finchv1.FinchApp{
				ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: newNamespace()},
				Spec:       finchv1.FinchAppSpec{CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "creds"}},
			}
			mutate(app)
			err := k8sClient.Create(ctx, app)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(wantMsg))
		},
		Entry("missing credentials Secret name", func(a *finchv1.FinchApp) { a.Spec.CredentialsSecretRef.Name = "" }, "spec.credentialsSecretRef.name"),
		Entry("apiURL without scheme", func(a *finchv1.FinchApp) { a.Spec.APIURL = "api.tryfinch.com" }, "spec.apiURL"),
		Entry("finchAPIVersion not a date", func(a *finchv1.FinchApp) { a.Spec.FinchAPIVersion = "v2" },
			"spec.finchAPIVersion: Invalid value: \"v2\": finchAPIVersion must be a date YYYY-MM-DD such as 2020-09-17"),
		Entry("negative rate limit", func(a *finchv1.FinchApp) { a.Spec.RateLimit = &finchv1.RateLimit{Requests: -1} }, "spec.rateLimit.requests"),
	)
})

var _ = Describe("kubectl explain", func() {
	It("shows the documented spec fields", func() {
		kubeconfig := writeKubeconfig(env)
		// The API server publishes a new CRD's schema a moment after the CRD
		// is established (later still on a busy machine): wait for it.
		var out []byte
		Eventually(func() error {
			var err error
			out, err = exec.Command(filepath.Join(env.BinaryAssetsDirectory, "kubectl"), "--kubeconfig", kubeconfig,
				"explain", "finchconnection.spec", "--recursive").CombinedOutput()
			return err
		}, 30*time.Second, 250*time.Millisecond).Should(Succeed(), func() string { return string(out) })
		for _, f := range []string{"appRef", "customerID", "customerName", "customerEmail", "products", "integration",
			"authMethod", "recordkeeping", "recordkeeper", "planID", "minutesToExpire", "connectFlow", "redirectURI", "sandbox", "manual", "tokenSecretRef", "deletionPolicy", "suspend"} {
			Expect(string(out)).To(ContainSubstring(f))
		}
		out, err := exec.Command(filepath.Join(env.BinaryAssetsDirectory, "kubectl"), "--kubeconfig", kubeconfig,
			"explain", "fconn.spec.customerID").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(ContainSubstring("stable, unique identifier for this employer"))
	})
})

func writeKubeconfig(env *envtest.Environment) string {
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "explain", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	data, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(path, data, 0o600)).To(Succeed())
	return path
}

var _ = Describe("ClusterFinchApp and appRef.kind", func() {
	clusterApp := func(conds ...finchv1.ClusterFinchAppCondition) *finchv1.ClusterFinchApp {
		return &finchv1.ClusterFinchApp{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "platform-"},
			Spec: finchv1.ClusterFinchAppSpec{
				FinchAppSpec: finchv1.FinchAppSpec{CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "creds"}},
				Conditions:   conds,
			},
		}
	}

	It("accepts conditions by selector, by names, or none", func() {
		for _, a := range []*finchv1.ClusterFinchApp{
			clusterApp(),
			clusterApp(finchv1.ClusterFinchAppCondition{Namespaces: []string{"a", "b"}}),
			clusterApp(finchv1.ClusterFinchAppCondition{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"t": "x"}}}),
		} {
			Expect(k8sClient.Create(ctx, a)).To(Succeed())
			Expect(a.Spec.APIURL).To(Equal("https://api.tryfinch.com"), "the FinchApp defaults apply")
		}
	})

	It("rejects a condition that names no namespace", func() {
		err := k8sClient.Create(ctx, clusterApp(finchv1.ClusterFinchAppCondition{}))
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("needs namespaceSelector or namespaces"))
	})

	It("rejects an appRef.kind that is neither FinchApp nor ClusterFinchApp", func() {
		c := validConnection(newNamespace())
		c.Spec.AppRef = &finchv1.AppReference{Kind: "Issuer", Name: "default"}
		err := k8sClient.Create(ctx, c)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`Unsupported value: "Issuer"`))
	})
})
