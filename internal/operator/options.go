package operator

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"

	"github.com/connectops/finch-operator/controllers"
	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/inbound"
)

// The manager's defaults, in one place: cmd/manager's flags, the tests and
// the benchmarks all start from them, so a benchmark measures what ships.
const (
	DefaultWorkers     = 10
	DefaultKubeQPS     = 500
	DefaultKubeBurst   = 1000
	DefaultInboundAddr = ":8082"
	// DefaultShutdownDelay covers the usual EndpointSlice propagation to
	// kube-proxy and Ingress controllers (about a second or two).
	DefaultShutdownDelay = 5 * time.Second
)

// Options configure one operator process: the controller-runtime manager,
// the controllers and the inbound server.
type Options struct {
	// Manager holds addresses and leader election; Scheme and Cache are set
	// by NewManager.
	Manager ctrl.Options
	// Controllers configure the FinchApp and FinchConnection controllers.
	Controllers controllers.Options
	// Inbound configures the callback and webhook server; its Client,
	// APIReader, Apps and Recorder are set by NewManager.
	Inbound inbound.Config
	// InboundAddr is the inbound server's listen address ("" or "0": none).
	InboundAddr string
	// KubeQPS and KubeBurst limit requests to the API server (0: the defaults).
	KubeQPS   float64
	KubeBurst int
	// ShutdownDelay is how long the process keeps running, leading and
	// serving after SIGTERM before it stops (SignalContext).
	ShutdownDelay time.Duration
	// ReadyCheck is an extra readiness check (nil: none): SignalContext's,
	// failing once SIGTERM arrives.
	ReadyCheck healthz.Checker

	// flag values parsed by Complete.
	ipBudget, callbackExchanges, callbackIP, trustedProxies, watchNamespaces, apiHosts string
	requireState, metricsSecure                                                        bool
	metricsCertDir                                                                     string
}

// BindFlags registers cmd/manager's flags on fs, with the defaults above.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	m := &o.Manager
	fs.StringVar(&m.Metrics.BindAddress, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint (plain HTTP, or HTTPS with --metrics-secure); \"0\" disables it.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", false, "Serve metrics over HTTPS to authenticated and authorized callers only: the API server checks each scrape's bearer token (TokenReview) and its permission to GET /metrics (SubjectAccessReview), so the manager needs create on tokenreviews and subjectaccessreviews, and Prometheus a role granting get on the non-resource URL /metrics.")
	fs.StringVar(&o.metricsCertDir, "metrics-cert-dir", "", "Directory holding tls.crt and tls.key for --metrics-secure, reloaded when they change (for example a cert-manager Certificate's Secret mounted there); empty: a self-signed certificate made at start.")
	fs.StringVar(&m.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	fs.StringVar(&o.InboundAddr, "inbound-bind-address", DefaultInboundAddr, "Address of the inbound server: /callback/{namespace}/{app}/{path} (employer browsers) and /webhooks/{namespace}/{app} (Finch); expose it through an Ingress. Use 127.0.0.1:8082 for a local run.")
	fs.StringVar(&m.PprofBindAddress, "pprof-bind-address", "", "Address of the net/http/pprof endpoints for profiling (empty: off).")
	fs.BoolVar(&m.LeaderElection, "leader-elect", false, "Enable leader election so only one replica reconciles (every replica serves the inbound endpoints).")
	fs.StringVar(&m.LeaderElectionID, "leader-election-id", "finch-operator.connectops.dev", "Name of the leader election Lease.")
	fs.StringVar(&m.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	fs.StringVar(&o.watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces the operator watches; empty: all. With a list, every cache, watch and Secret read is scoped to those namespaces, so Roles there (no ClusterRole) are enough; ClusterFinchApps are not served then.")
	fs.StringVar(&o.Controllers.ClusterResourceNamespace, "cluster-resource-namespace", "", "Namespace holding the credentials and webhook Secrets of ClusterFinchApps (and their callback Secrets), and every Finch application's budget ConfigMap (finch-budget-<id>, shared by all FinchApps and ClusterFinchApps with the same apiURL and client_id); default: the namespace the operator runs in.")
	fs.IntVar(&o.Controllers.MaxConcurrentReconciles, "max-concurrent-reconciles", DefaultWorkers, "FinchConnection reconciles run in parallel (Finch calls stay within each FinchApp's budget).")
	fs.Float64Var(&o.KubeQPS, "kube-api-qps", DefaultKubeQPS, "Client-side QPS limit toward the Kubernetes API server (API Priority and Fairness protects the server; see docs/benchmarks.md).")
	fs.IntVar(&o.KubeBurst, "kube-api-burst", DefaultKubeBurst, "Client-side burst toward the Kubernetes API server.")
	fs.StringVar(&o.trustedProxies, "trusted-proxies", "", "Comma-separated CIDRs of proxies (Ingress controller, load balancer) whose X-Forwarded-For the callback's per-address rate limit believes; empty: the peer address counts.")
	fs.StringVar(&o.ipBudget, "finch-ip-budget", budgetFlag(controllers.DefaultIPBudget), "Budget of Finch requests per Finch API host, REQUESTS/WINDOW, shared by every FinchApp calling it (one egress IP): Finch allows 1000 per 5 minutes per IP and answers finch_api_ip_rl with a 60-minute penalty beyond.")
	fs.StringVar(&o.apiHosts, "finch-api-hosts", finch.DefaultAPIHost, "Comma-separated Finch API hosts a FinchApp's spec.apiURL may name: host (its default port), host:port, or host:* (any port; for local simulators). An app naming another host is Stalled (APIHostNotAllowed) and nothing is sent there.")
	fs.StringVar(&o.callbackExchanges, "callback-exchanges", budgetFlag(inbound.DefaultCallbackExchanges), "Ceiling on code exchanges the redirect callback makes per FinchApp (and per namespace of a ClusterFinchApp), REQUESTS/WINDOW; the rest of the app's token budget stays with reconciles (embedded hand-offs).")
	fs.StringVar(&o.callbackIP, "callback-rate-per-ip", "10/1m", "Unverifiable callbacks (no valid signed state) allowed per client address, BURST/REFILL-INTERVAL-FOR-THE-BURST (default: a burst of 10, refilled over a minute); beyond it they are answered 429 with Retry-After. Callbacks with a valid state are never limited by it.")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", DefaultShutdownDelay, "After SIGTERM, keep reconciling (as leader) and serving the inbound endpoints this long, with /readyz failing, before stopping: Kubernetes removes a deleted Pod from the Service's endpoints while it sends SIGTERM, so kube-proxy and Ingress controllers still route requests to it for a few seconds. Keep it below terminationGracePeriodSeconds.")
	fs.BoolVar(&o.requireState, "callback-require-state", true, "Refuse redirect callbacks without the state the operator signed for the session. Set false only if Finch Connect does not return state for your app: such callbacks are then matched by the customer_id Finch echoes (within the same rate limits and exchange ceiling).")
	o.Manager.LeaderElectionReleaseOnCancel = true
}

// budgetFlag renders a budget the way --finch-ip-budget takes it.
func budgetFlag(b budget.Config) string {
	w := b.Window.String()
	switch {
	case b.Window%time.Hour == 0:
		w = fmt.Sprintf("%dh", b.Window/time.Hour)
	case b.Window%time.Minute == 0:
		w = fmt.Sprintf("%dm", b.Window/time.Minute)
	}
	return fmt.Sprintf("%d/%s", b.Requests, w)
}

// Complete turns the parsed flag values into options; the error names the flag.
func (o *Options) Complete() error {
	proxies, err := inbound.ParseTrustedProxies(o.trustedProxies)
	if err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	o.Inbound.TrustedProxies = proxies
	if o.Controllers.IPBudget, err = budget.Parse(o.ipBudget); err != nil {
		return fmt.Errorf("--finch-ip-budget: %w", err)
	}
	if o.Controllers.FinchAPIHosts, err = finch.ParseAPIHosts(o.apiHosts); err != nil {
		return fmt.Errorf("--finch-api-hosts: %w", err)
	}
	if o.Inbound.CallbackExchanges, err = budget.Parse(o.callbackExchanges); err != nil {
		return fmt.Errorf("--callback-exchanges: %w", err)
	}
	ipRate, err := budget.Parse(o.callbackIP)
	if err != nil {
		return fmt.Errorf("--callback-rate-per-ip: %w", err)
	}
	o.Inbound.CallbackIPBurst = ipRate.Requests
	o.Inbound.CallbackIPInterval = ipRate.Window / time.Duration(ipRate.Requests)
	o.Inbound.AllowStatelessCallbacks = !o.requireState
	if o.metricsSecure {
		// As kubebuilder scaffolds: HTTPS, and every scrape authenticated and
		// authorized by the API server, so the metrics (which name namespaces
		// and apps) are no longer open to every pod that can reach the port.
		o.Manager.Metrics.SecureServing = true
		o.Manager.Metrics.FilterProvider = filters.WithAuthenticationAndAuthorization
		o.Manager.Metrics.CertDir = o.metricsCertDir
	} else if o.metricsCertDir != "" {
		return fmt.Errorf("--metrics-cert-dir: needs --metrics-secure")
	}
	if o.Controllers.WatchNamespaces, err = parseNamespaces(o.watchNamespaces); err != nil {
		return fmt.Errorf("--watch-namespaces: %w", err)
	}
	if o.Controllers.ClusterResourceNamespace == "" {
		o.Controllers.ClusterResourceNamespace = ownNamespace()
	} else if errs := validation.IsDNS1123Label(o.Controllers.ClusterResourceNamespace); len(errs) > 0 {
		return fmt.Errorf("--cluster-resource-namespace: %q is not a namespace name: %s", o.Controllers.ClusterResourceNamespace, strings.Join(errs, "; "))
	}
	return nil
}

// serviceAccountNamespace is where Kubernetes mounts the pod's namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// ownNamespace is the namespace the operator runs in: POD_NAMESPACE (the
// downward API), else the service account's mount ("" outside a cluster).
func ownNamespace() string {
	if ns := strings.TrimSpace(os.Getenv("POD_NAMESPACE")); ns != "" {
		return ns
	}
	b, err := os.ReadFile(serviceAccountNamespace)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// parseNamespaces reads a comma-separated list of namespace names.
func parseNamespaces(v string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, ns := range strings.Split(v, ",") {
		ns = strings.TrimSpace(ns)
		if ns == "" || seen[ns] {
			continue
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("%q is not a namespace name: %s", ns, strings.Join(errs, "; "))
		}
		seen[ns] = true
		out = append(out, ns)
	}
	return out, nil
}

// DefaultOptions are the options cmd/manager runs with when given no flags
// (addresses included).
func DefaultOptions() Options {
	var o Options
	fs := flag.NewFlagSet("defaults", flag.ContinueOnError)
	o.BindFlags(fs)
	if err := o.Complete(); err != nil {
		panic(err) // the defaults above parse
	}
	return o
}
