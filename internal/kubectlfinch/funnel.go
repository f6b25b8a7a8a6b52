package kubectlfinch

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

type funnelOptions struct {
	*Options
	app           appFilter
	output        string
	allNamespaces bool
}

// Funnel is one app's connect funnel (the JSON of `funnel -o json`).
type Funnel struct {
	// Namespace is the FinchApp's; empty for a ClusterFinchApp, whose funnel
	// counts its connections in scope (with -A, in every namespace).
	Namespace string `json:"namespace,omitempty"`
	// Kind is FinchApp or ClusterFinchApp.
	Kind       string `json:"kind"`
	App        string `json:"app"`
	Total      int    `json:"total"`
	Awaiting   int    `json:"awaiting"`
	Connecting int    `json:"connecting"`
	Connected  int    `json:"connected"`
	Reauth     int    `json:"reauth"`
	Error      int    `json:"error"`
	// DropOff counts employers who have not connected although their first
	// Connect session's lifetime has passed: their link expired unused.
	DropOff int `json:"dropOff"`
	// MedianTimeToConnectSeconds is from the first Connect session to
	// connected, over the app's connected employers (adopted connections had
	// no session); absent when none.
	MedianTimeToConnectSeconds *float64 `json:"medianTimeToConnectSeconds,omitempty"`
}

func newFunnelCommand(o *Options) *cobra.Command {
	f := &funnelOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "funnel",
		Short: "Per FinchApp or ClusterFinchApp: how many employers are awaiting, connecting, connected, in reauth, in error; drop-off; median time to connect",
		Long: `Show the connect funnel of each app, counted from the FinchConnections' status.
A FinchApp is named by its name (NAMESPACE/NAME with -A); a ClusterFinchApp, as
ClusterFinchApp/NAME, counts its connections in the namespace (-A: in every
namespace, where ClusterFinchApps without connections show too).

  AWAITING     Pending or AwaitingConnect: the employer has not finished Finch Connect
  CONNECTING   the employer authenticated; Finch is still setting up the connection
  CONNECTED    Finch reports the connection connected
  REAUTH       a reauthentication session waits for the employer
  ERROR        Error or Disconnected: a human must act (kubectl finch get says what)
  DROP-OFF     not connected although the first Connect session's lifetime
               (spec.minutesToExpire) has passed: the employer let the link expire
  MEDIAN TTC   median time from the first Connect session to connected`,
		Example: `  kubectl finch funnel
  kubectl finch funnel -A
  kubectl finch funnel --app default -o json
  kubectl finch funnel -A --app ClusterFinchApp/platform`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context())
		},
	}
	cmd.Flags().Var(&f.app, "app", "only this app: "+appFlagUsage)
	cmd.Flags().StringVarP(&f.output, "output", "o", "", "output format: json")
	cmd.Flags().BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "every namespace")
	return cmd
}

func (f *funnelOptions) run(ctx context.Context) error {
	if f.output != "" && f.output != "json" {
		return fmt.Errorf("unknown output format %q: use json", f.output)
	}
	conns, err := listConnections(ctx, f.Options, f.allNamespaces, &f.app)
	if err != nil {
		return err
	}
	apps, err := f.appsInScope(ctx)
	if err != nil {
		return err
	}
	funnels := computeFunnels(conns, apps, f.Now())
	if f.output == "json" {
		enc := json.NewEncoder(f.Out)
		enc.SetIndent("", "  ")
		if funnels == nil {
			funnels = []Funnel{}
		}
		return enc.Encode(funnels)
	}
	if len(funnels) == 0 {
		_, err := fmt.Fprintln(f.ErrOut, "No FinchApps, ClusterFinchApps or FinchConnections found.")
		return err
	}
	w := printers.GetNewTabWriter(f.Out)
	fmt.Fprintln(w, "APP\tTOTAL\tAWAITING\tCONNECTING\tCONNECTED\tREAUTH\tERROR\tDROP-OFF\tMEDIAN TTC")
	for _, fu := range funnels {
		app := appLabel(fu.Kind, fu.App)
		if f.allNamespaces && fu.Namespace != "" {
			app = fu.Namespace + "/" + fu.App
		}
		ttc := "-"
		if fu.MedianTimeToConnectSeconds != nil {
			ttc = duration.HumanDuration(time.Duration(*fu.MedianTimeToConnectSeconds * float64(time.Second)))
		}
		fmt.Fprintln(w, strings.Join([]string{app, strconv.Itoa(fu.Total), strconv.Itoa(fu.Awaiting), strconv.Itoa(fu.Connecting),
			strconv.Itoa(fu.Connected), strconv.Itoa(fu.Reauth), strconv.Itoa(fu.Error), strconv.Itoa(fu.DropOff), ttc}, "\t"))
	}
	return w.Flush()
}

// appKey is an app in the funnel: a FinchApp's namespace, kind and name; a
// ClusterFinchApp has no namespace.
type appKey struct {
	namespace, kind, name string
}

func connectionApp(conn *finchv1.FinchConnection) appKey {
	k := conn.AppKey()
	return appKey{namespace: k.Namespace, kind: conn.AppKind(), name: k.Name}
}

// appsInScope lists the apps in scope, so an app without connections still
// shows: the FinchApps, and with -A the ClusterFinchApps. Someone allowed to
// read connections but not apps still gets the rest.
func (f *funnelOptions) appsInScope(ctx context.Context) ([]appKey, error) {
	c, err := f.Client()
	if err != nil {
		return nil, err
	}
	out, err := f.finchApps(ctx, c)
	if err != nil || !f.allNamespaces {
		return out, err
	}
	cluster, err := f.clusterFinchApps(ctx, c)
	return append(out, cluster...), err
}

// finchApps lists the FinchApps in scope (the namespace, or every one).
func (f *funnelOptions) finchApps(ctx context.Context, c client.Client) ([]appKey, error) {
	var opts []client.ListOption
	if !f.allNamespaces {
		ns, err := f.Namespace()
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.InNamespace(ns))
	}
	list := &finchv1.FinchAppList{}
	if err := c.List(ctx, list, opts...); err != nil {
		if apierrors.IsForbidden(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list FinchApps: %w", err)
	}
	var out []appKey
	for _, a := range list.Items {
		if f.app.matches(finchv1.FinchAppKind, a.Name) {
			out = append(out, appKey{namespace: a.Namespace, kind: finchv1.FinchAppKind, name: a.Name})
		}
	}
	return out, nil
}

// clusterFinchApps lists the ClusterFinchApps. Reading them takes a
// ClusterRoleBinding few users have, and an operator older than the kind has
// no such resource: both leave them out.
func (f *funnelOptions) clusterFinchApps(ctx context.Context, c client.Client) ([]appKey, error) {
	list := &finchv1.ClusterFinchAppList{}
	if err := c.List(ctx, list); err != nil {
		if apierrors.IsForbidden(err) || meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list ClusterFinchApps: %w", err)
	}
	var out []appKey
	for _, a := range list.Items {
		if f.app.matches(finchv1.ClusterFinchAppKind, a.Name) {
			out = append(out, appKey{kind: finchv1.ClusterFinchAppKind, name: a.Name})
		}
	}
	return out, nil
}

// computeFunnels counts conns per app (a FinchApp per namespace, a
// ClusterFinchApp across namespaces); apps lists apps to show even without
// connections.
func computeFunnels(conns []finchv1.FinchConnection, apps []appKey, now time.Time) []Funnel {
	byApp := map[appKey]*Funnel{}
	ttc := map[appKey][]time.Duration{}
	get := func(k appKey) *Funnel {
		if byApp[k] == nil {
			byApp[k] = &Funnel{Namespace: k.namespace, Kind: k.kind, App: k.name}
		}
		return byApp[k]
	}
	for _, k := range apps {
		get(k)
	}
	for i := range conns {
		conn := &conns[i]
		k := connectionApp(conn)
		fu, st := get(k), &conn.Status
		countPhase(fu, st.Phase)
		if st.ConnectedAt == nil && st.FirstSessionTime != nil &&
			!now.Before(st.FirstSessionTime.Add(time.Duration(conn.SessionMinutes())*time.Minute)) {
			fu.DropOff++
		}
		if st.ConnectedAt != nil && st.FirstSessionTime != nil && !st.ConnectedAt.Before(st.FirstSessionTime) {
			ttc[k] = append(ttc[k], st.ConnectedAt.Sub(st.FirstSessionTime.Time))
		}
	}
	out := make([]Funnel, 0, len(byApp))
	for k, fu := range byApp {
		if ds := ttc[k]; len(ds) > 0 {
			secs := median(ds).Seconds()
			fu.MedianTimeToConnectSeconds = &secs
		}
		out = append(out, *fu)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.App < b.App
	})
	if len(out) == 0 {
		return nil
	}
	return out
}

// countPhase counts one connection in its funnel stage.
func countPhase(fu *Funnel, phase finchv1.Phase) {
	fu.Total++
	switch phase {
	case "", finchv1.PhasePending, finchv1.PhaseAwaitingConnect:
		fu.Awaiting++
	case finchv1.PhaseConnecting:
		fu.Connecting++
	case finchv1.PhaseConnected:
		fu.Connected++
	case finchv1.PhaseReauthRequired:
		fu.Reauth++
	default:
		fu.Error++
	}
}

func median(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	n := len(ds)
	if n%2 == 1 {
		return ds[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2
}
