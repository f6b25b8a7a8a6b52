package v1alpha1_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// kubectlTable runs kubectl get with args and returns its table: one map per
// row, from header to cell (columns are at least two spaces apart, headers
// may hold one space).
func kubectlTable(kubeconfig string, args ...string) []map[string]string {
	var out []byte
	// The API server serves a new CRD's columns a moment after it is established.
	Eventually(func() error {
		var err error
		out, err = exec.Command(filepath.Join(env.BinaryAssetsDirectory, "kubectl"),
			append([]string{"--kubeconfig", kubeconfig, "get"}, args...)...).CombinedOutput()
		return err
	}, 30*time.Second, 250*time.Millisecond).Should(Succeed(), func() string { return string(out) })
	fmt.Fprintf(GinkgoWriter, "$ kubectl get %s\n%s\n", strings.Join(args, " "), out)
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	Expect(len(lines)).To(BeNumerically(">=", 2), string(out))
	// Cells are located by the header's column starts (a cell may be empty).
	starts := regexp.MustCompile(`\S+( \S+)*`).FindAllStringIndex(lines[0], -1)
	var rows []map[string]string
	for _, l := range lines[1:] {
		row := map[string]string{}
		for i, st := range starts {
			end := len(l)
			if i+1 < len(starts) {
				end = min(starts[i+1][0], len(l))
			}
			if st[0] < len(l) {
				row[lines[0][st[0]:st[1]]] = strings.TrimSpace(l[st[0]:end])
			}
		}
		rows = append(rows, row)
	}
	return rows
}

func headers(rows []map[string]string) []string {
	var out []string
	for h := range rows[0] {
		out = append(out, h)
	}
	return out
}

var _ = Describe("printer columns through kubectl get", func() {
	const callback = "https://finch.example.com/callback/team/default/AbCdEfGhIjKlMnOpQrStUvWx"
	const webhook = "https://finch.example.com/webhooks/team/default"

	It("shows a FinchApp's callback and webhook URLs and RateLimited with -o wide", func() {
		ns := newNamespace()
		app := &finchv1.FinchApp{
			ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns},
			Spec:       finchv1.FinchAppSpec{CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "creds"}},
		}
		Expect(k8sClient.Create(ctx, app)).To(Succeed())
		now := metav1.Now()
		app.Status = finchv1.FinchAppStatus{
			CallbackURL: callback, WebhookURL: webhook,
			Connections: finchv1.ConnectionCounts{Total: 2, Connected: 2},
			Conditions: []metav1.Condition{
				{Type: finchv1.ConditionReady, Status: metav1.ConditionTrue, Reason: finchv1.ReasonSucceeded, LastTransitionTime: now},
				{Type: finchv1.ConditionRateLimited, Status: metav1.ConditionTrue, Reason: finchv1.ReasonIPRateLimited, LastTransitionTime: now},
			},
		}
		Expect(k8sClient.Status().Update(ctx, app)).To(Succeed())
		kubeconfig := writeKubeconfig(env)

		rows := kubectlTable(kubeconfig, "fapp", "-n", ns, "-o", "wide")
		Expect(rows).To(HaveLen(1))
		Expect(rows[0]).To(HaveKeyWithValue("NAME", "default"))
		Expect(rows[0]).To(HaveKeyWithValue("READY", "True"))
		Expect(rows[0]).To(HaveKeyWithValue("CONNECTIONS", "2"))
		Expect(rows[0]).To(HaveKeyWithValue("CONNECTED", "2"))
		Expect(rows[0]).To(HaveKeyWithValue("RATE LIMITED", "True"))
		Expect(rows[0]).To(HaveKeyWithValue("CALLBACK URL", callback))
		Expect(rows[0]).To(HaveKeyWithValue("WEBHOOK URL", webhook))

		// Without -o wide the table stays narrow.
		rows = kubectlTable(kubeconfig, "fapp", "-n", ns)
		Expect(headers(rows)).NotTo(ContainElements("CALLBACK URL", "WEBHOOK URL", "RATE LIMITED"))
	})

	It("shows a ClusterFinchApp's callback and webhook URLs and RateLimited with -o wide", func() {
		app := &finchv1.ClusterFinchApp{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "columns-"},
			Spec:       finchv1.ClusterFinchAppSpec{FinchAppSpec: finchv1.FinchAppSpec{CredentialsSecretRef: finchv1.CredentialsSecretReference{Name: "creds"}}},
		}
		Expect(k8sClient.Create(ctx, app)).To(Succeed())
		app.Status.CallbackURL = "https://finch.example.com/cluster/callback/" + app.Name + "/XyZ"
		app.Status.WebhookURL = "https://finch.example.com/cluster/webhooks/" + app.Name
		app.Status.Conditions = []metav1.Condition{{Type: finchv1.ConditionRateLimited, Status: metav1.ConditionFalse,
			Reason: finchv1.ReasonSucceeded, LastTransitionTime: metav1.Now()}}
		Expect(k8sClient.Status().Update(ctx, app)).To(Succeed())

		rows := kubectlTable(writeKubeconfig(env), "cfapp", app.Name, "-o", "wide")
		Expect(rows).To(HaveLen(1))
		Expect(rows[0]).To(HaveKeyWithValue("RATE LIMITED", "False"))
		Expect(rows[0]).To(HaveKeyWithValue("CALLBACK URL", app.Status.CallbackURL))
		Expect(rows[0]).To(HaveKeyWithValue("WEBHOOK URL", app.Status.WebhookURL))
	})

	It("shows a FinchConnection's app and the Ready condition's reason", func() {
		ns := newNamespace()
		mk := func(name string, ref *finchv1.AppReference, phase finchv1.Phase, reason string) {
			c := validConnection(ns)
			c.GenerateName, c.Name = "", name
			c.Spec.AppRef = ref
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			c.Status.Phase = phase
			c.Status.Conditions = []metav1.Condition{{Type: finchv1.ConditionReady, Status: metav1.ConditionFalse,
				Reason: reason, Message: "m", LastTransitionTime: metav1.Now()}}
			Expect(k8sClient.Status().Update(ctx, c)).To(Succeed())
		}
		mk("acme", nil, finchv1.PhaseAwaitingConnect, finchv1.ReasonAwaitingEmployer)
		mk("globex", &finchv1.AppReference{Kind: finchv1.ClusterFinchAppKind, Name: "platform"}, finchv1.PhaseError, finchv1.ReasonNamespaceNotAllowed)
		kubeconfig := writeKubeconfig(env)

		rows := kubectlTable(kubeconfig, "fconn", "-n", ns)
		Expect(rows).To(HaveLen(2))
		Expect(headers(rows)).To(ContainElements("NAME", "CUSTOMER", "APP", "PHASE", "REASON", "AGE"))
		Expect(rows[0]).To(HaveKeyWithValue("NAME", "acme"))
		Expect(rows[0]).To(HaveKeyWithValue("APP", "default"))
		Expect(rows[0]).To(HaveKeyWithValue("PHASE", "AwaitingConnect"))
		Expect(rows[0]).To(HaveKeyWithValue("REASON", "AwaitingEmployer"))
		Expect(rows[1]).To(HaveKeyWithValue("APP", "platform"))
		Expect(rows[1]).To(HaveKeyWithValue("REASON", "NamespaceNotAllowed"))

		rows = kubectlTable(kubeconfig, "fconn", "-n", ns, "-o", "wide")
		Expect(rows[0]).To(HaveKeyWithValue("APP KIND", "FinchApp"))
		Expect(rows[1]).To(HaveKeyWithValue("APP KIND", "ClusterFinchApp"))
	})
})
