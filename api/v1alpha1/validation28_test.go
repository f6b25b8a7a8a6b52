package v1alpha1_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// rawApp is a FinchApp (or ClusterFinchApp) as kubectl would send it: every
// field of spec as written, zero values and strings included.
func rawApp(kind string, spec map[string]any) *unstructured.Unstructured {
	full := map[string]any{"credentialsSecretRef": map[string]any{"name": "creds"}}
	for k, v := range spec {
		full[k] = v
	}
	meta := map[string]any{"generateName": "app-"}
	if kind == finchv1.FinchAppKind {
		meta["namespace"] = newNamespace()
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": finchv1.GroupVersion.String(), "kind": kind, "metadata": meta, "spec": full,
	}}
}

// The messages say what to write: the bound, the default, an example, never a
// bare regular expression.
var _ = Describe("FinchApp fields are checked at apply time with messages that say what to write", func() {
	for _, kind := range []string{finchv1.FinchAppKind, finchv1.ClusterFinchAppKind} {
		DescribeTable(kind+" rejected",
			func(spec map[string]any, wantMsg string) {
				err := k8sClient.Create(ctx, rawApp(kind, spec))
				Expect(err).To(HaveOccurred(), "spec %v", spec)
				Expect(err.Error()).To(ContainSubstring(wantMsg))
				Expect(err.Error()).NotTo(ContainSubstring("should match"), "a bare pattern error")
			},
			Entry("introspectionInterval 0s (it used to become 6h silently)", map[string]any{"introspectionInterval": "0s"},
				"spec.introspectionInterval: Invalid value: \"0s\": introspectionInterval must be between 1m and 720h; omit it for the default, 6h"),
			Entry("introspectionInterval 1s", map[string]any{"introspectionInterval": "1s"}, "introspectionInterval must be between 1m and 720h"),
			Entry("introspectionInterval 59s", map[string]any{"introspectionInterval": "59s"}, "introspectionInterval must be between 1m and 720h"),
			Entry("introspectionInterval 721h", map[string]any{"introspectionInterval": "721h"}, "introspectionInterval must be between 1m and 720h"),
			Entry("introspectionInterval in days", map[string]any{"introspectionInterval": "1d"},
				"introspectionInterval must be a duration such as 6h, 90m or 1h30m"),
			Entry("introspectionInterval negative", map[string]any{"introspectionInterval": "-1h"},
				"introspectionInterval must be a duration such as 6h, 90m or 1h30m"),
			Entry("rateLimit.window 0s", map[string]any{"rateLimit": map[string]any{"window": "0s"}},
				"spec.rateLimit.window: Invalid value: \"0s\": rateLimit.window must be between 1s and 1h; omit it for the default, 1m"),
			Entry("rateLimit.window 999ms", map[string]any{"rateLimit": map[string]any{"window": "999ms"}}, "rateLimit.window must be between 1s and 1h"),
			Entry("rateLimit.window 61m", map[string]any{"rateLimit": map[string]any{"window": "61m"}}, "rateLimit.window must be between 1s and 1h"),
			Entry("rateLimit.window not a duration", map[string]any{"rateLimit": map[string]any{"window": "a minute"}},
				"rateLimit.window must be a duration such as 1m, 30s or 1m30s"),
			Entry("apiURL without scheme", map[string]any{"apiURL": "api.tryfinch.com"},
				"spec.apiURL: Invalid value: \"api.tryfinch.com\": apiURL must be an https:// URL such as https://api.tryfinch.com"),
			Entry("apiURL of another scheme", map[string]any{"apiURL": "ftp://api.tryfinch.com"}, "apiURL must be an https:// URL such as https://api.tryfinch.com"),
			Entry("apiURL without host", map[string]any{"apiURL": "https://"}, "apiURL must be an https:// URL such as https://api.tryfinch.com"),
			Entry("apiURL http:// to a remote host", map[string]any{"apiURL": "http://api.tryfinch.com"},
				"spec.apiURL: Invalid value: apiURL must be an https:// URL such as https://api.tryfinch.com: the client secret travels in every request, so http:// is accepted only for a loopback host (127.0.0.1, ::1, localhost) or with insecureAPIURL: true"),
			Entry("apiURL http:// to a remote host, insecureAPIURL false", map[string]any{"apiURL": "http://10.0.0.5:8090", "insecureAPIURL": false},
				"or with insecureAPIURL: true"),
			Entry("apiURL http:// to a host named like loopback", map[string]any{"apiURL": "http://localhost.example.com"}, "or with insecureAPIURL: true"),
			Entry("redirectURI without scheme", map[string]any{"redirectURI": "example.com/cb"},
				"spec.redirectURI: Invalid value: \"example.com/cb\": redirectURI must be an http:// or https:// URL such as https://app.example.com/finch/callback"),
			Entry("publicURL without scheme", map[string]any{"publicURL": "finch.example.com"},
				"publicURL must be an http:// or https:// URL such as https://finch-operator.example.com"),
			Entry("successURL relative", map[string]any{"successURL": "/done"},
				"successURL must be an http:// or https:// URL such as https://app.example.com/finch/done"),
			Entry("finchAPIVersion not a date", map[string]any{"finchAPIVersion": "2020-9-17"},
				"finchAPIVersion must be a date YYYY-MM-DD such as 2020-09-17"),
			Entry("deprecated apiVersion not a date", map[string]any{"apiVersion": "latest"},
				"apiVersion (deprecated: rename it to finchAPIVersion) must be a date YYYY-MM-DD"),
			Entry("apiVersion and finchAPIVersion that differ", map[string]any{"apiVersion": "2020-09-17", "finchAPIVersion": "2024-01-01"},
				"spec.apiVersion: Invalid value: apiVersion is the deprecated name of finchAPIVersion: remove apiVersion and keep finchAPIVersion"),
		)

		DescribeTable(kind+" accepted at the boundaries",
			func(spec map[string]any) {
				Expect(k8sClient.Create(ctx, rawApp(kind, spec))).To(Succeed(), "spec %v", spec)
			},
			Entry("introspectionInterval 1m", map[string]any{"introspectionInterval": "1m"}),
			Entry("introspectionInterval 60s", map[string]any{"introspectionInterval": "60s"}),
			Entry("introspectionInterval 720h", map[string]any{"introspectionInterval": "720h"}),
			Entry("introspectionInterval 1h30m", map[string]any{"introspectionInterval": "1h30m"}),
			Entry("introspectionInterval 1.5h", map[string]any{"introspectionInterval": "1.5h"}),
			Entry("rateLimit.window 1s", map[string]any{"rateLimit": map[string]any{"requests": int64(1), "window": "1s"}}),
			Entry("rateLimit.window 1h", map[string]any{"rateLimit": map[string]any{"requests": int64(100000), "window": "1h"}}),
			Entry("rateLimit.window as the operator writes it", map[string]any{"rateLimit": map[string]any{"window": "1m0s"}}),
			Entry("apiURL https://", map[string]any{"apiURL": "https://sandbox.tryfinch.com/api"}),
			Entry("apiURL http://127.0.0.1", map[string]any{"apiURL": "http://127.0.0.1:8090"}),
			Entry("apiURL http://[::1]", map[string]any{"apiURL": "http://[::1]:8090"}),
			Entry("apiURL http://localhost", map[string]any{"apiURL": "http://localhost:8090"}),
			Entry("apiURL http:// to a remote host with insecureAPIURL", map[string]any{"apiURL": "http://finch-sim.test:8090", "insecureAPIURL": true}),
			Entry("http:// redirect, public and success URLs", map[string]any{"redirectURI": "http://localhost:3000/cb",
				"publicURL": "http://127.0.0.1:8082", "successURL": "https://app.example.com/done"}),
			Entry("the deprecated apiVersion alone", map[string]any{"apiVersion": "2021-06-01"}),
			Entry("finchAPIVersion alone", map[string]any{"finchAPIVersion": "2021-06-01"}),
			Entry("both names with the same value", map[string]any{"apiVersion": "2021-06-01", "finchAPIVersion": "2021-06-01"}),
		)
	}

	It("rejects an update that makes a valid app invalid", func() {
		u := rawApp(finchv1.FinchAppKind, map[string]any{"apiURL": "http://finch-sim.test:8090", "insecureAPIURL": true})
		Expect(k8sClient.Create(ctx, u)).To(Succeed())
		Expect(unstructured.SetNestedField(u.Object, false, "spec", "insecureAPIURL")).To(Succeed())
		err := k8sClient.Update(ctx, u)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("or with insecureAPIURL: true"))
	})

	DescribeTable("FinchConnection rejected",
		func(mutate func(*finchv1.FinchConnection), wantMsg string) {
			c := validConnection(newNamespace())
			mutate(c)
			err := k8sClient.Create(ctx, c)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(wantMsg))
			Expect(err.Error()).NotTo(ContainSubstring("should match"))
		},
		Entry("redirectURI without scheme", func(c *finchv1.FinchConnection) { c.Spec.RedirectURI = "example.com/cb" },
			"spec.redirectURI: Invalid value: \"example.com/cb\": redirectURI must be an http:// or https:// URL such as https://app.example.com/finch/callback"),
		Entry("redirectURI of another scheme", func(c *finchv1.FinchConnection) { c.Spec.RedirectURI = "myapp://callback" },
			"redirectURI must be an http:// or https:// URL"),
	)
})
