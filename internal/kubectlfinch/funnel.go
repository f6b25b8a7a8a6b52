package kubectlfinch

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

type funnelOptions struct {
	*Options
	app           appFilter
	selector      string
	out           *outputFlags
	allNamespaces bool
}

// Funnel is one app's connect funnel: the "funnel" field of each app that
// funnel -o json|yaml prints.
type Funnel struct {
	Total      int `json:"total"`
	Awaiting   int `json:"awaiting"`
	Connecting int `json:"connecting"`
	Connected  int `json:"connected"`
	Reauth     int `json:"reauth"`
	Error      int `json:"error"`
	// DropOff counts employers who have not connected although their first
	// Connect session's lifetime has passed: their link expired unused.
	DropOff int `json:"dropOff"`
	// MedianTimeToConnectSeconds is from the first Connect session to
	// connected, over the app's connected employers (adopted connections had
	// no session); absent when none.
	MedianTimeToConnectSeconds *float64 `json:"medianTimeToConnectSeconds,omitempty"`

	// app is the FinchApp (namespace, name) or ClusterFinchApp (name) counted.
	app appKey
}

func newFunnelCommand(o *Options) *cobra.Command {
	f := &funnelOptions{Options: o, out: newOutputFlags()}
	cmd := &cobra.Command{
		Use:   "funnel",
		Short: "Per app: awaiting, connected, in error, drop-off, time to connect",
		Long: `Show the connect funnel of each FinchApp and ClusterFinchApp, counted from the
FinchConnections' status. A FinchApp is named by its name (NAMESPACE/NAME with
-A); a ClusterFinchApp, as ClusterFinchApp/NAME, counts its connections in the
namespace (-A: in every namespace, where ClusterFinchApps without connections
show too). -l counts only the connections with those labels, and lists only the
apps that have some.

  AWAITING    Pending or AwaitingConnect: the employer has not finished
              Finch Connect
  CONNECTING  the employer authenticated; Finch is still setting up the
              connection
  CONNECTED   Finch reports the connection connected
  REAUTH      a reauthentication session waits for the employer
  ERROR       Error or Disconnected: a human must act (kubectl finch get
              says what)
  DROP-OFF    not connected although the first Connect session's lifetime
              (spec.minutesToExpire) has passed: the link expired unused
  MEDIAN TTC  median time from the first Connect session to connected

-o wide adds each app's kind and namespace and the share of employers
connected. -o json, yaml, name, jsonpath=... and custom-columns=... print each
app as apiVersion, kind and metadata (name, namespace) with a "funnel" field
holding the counts (total, awaiting, connecting, connected, reauth, error,
dropOff, medianTimeToConnectSeconds); -o name prints the apps' names.`,
		Example: `  kubectl finch funnel
  kubectl finch funnel -A
  kubectl finch funnel --app default -o json
  kubectl finch funnel -A --app ClusterFinchApp/platform
  kubectl finch funnel -l team=payroll
  kubectl finch funnel -o jsonpath='{.items[0].funnel.connected}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context())
		},
	}
	flags := cmd.Flags()
	flags.Var(&f.app, "app", "only this app: "+appFlagUsage)
	flags.StringVarP(&f.selector, "selector", "l", "",
		"count only connections with these labels (e.g. team=payroll)")
	flags.BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "every namespace")
	f.out.add(cmd, "a table")
	o.registerAppCompletion(cmd)
	return cmd
}

func (f *funnelOptions) run(ctx context.Context) error {
	if err := f.out.validate(); err != nil {
		return err
	}
	sel, err := parseSelector(f.selector)
	if err != nil {
		return err
	}
	conns, _, err := listConnections(ctx, f.Options, f.allNamespaces, &f.app, sel)
	if err != nil {
		return err
	}
	var apps []appKey
	if f.selector == "" {
		if apps, err = f.appsInScope(ctx); err != nil {
			return err
		}
	}
	funnels := computeFunnels(conns, apps, f.Now())
	table, wide := f.out.table()
	if !table {
		return f.out.printObject(f.Out, funnelList(funnels))
	}
	if len(funnels) == 0 {
		_, err := fmt.Fprintln(f.ErrOut, "No FinchApps, ClusterFinchApps or FinchConnections found.")
		return err
	}
	header := []string{"APP", "TOTAL", "AWAITING", "CONNECTING", "CONNECTED", "REAUTH", "ERROR", "DROP-OFF", "MEDIAN TTC"}
	if wide {
		header = append([]string{"NAMESPACE", "KIND", "NAME"}, append(header[1:], "CONNECTED %")...)
	}
	rows := make([][]string, 0, len(funnels))
	for _, fu := range funnels {
		app := appLabel(fu.app.kind, fu.app.name)
		if f.allNamespaces && fu.app.namespace != "" {
			app = fu.app.namespace + "/" + fu.app.name
		}
		ttc := "-"
		if fu.MedianTimeToConnectSeconds != nil {
			ttc = duration.HumanDuration(time.Duration(*fu.MedianTimeToConnectSeconds * float64(time.Second)))
		}
		counts := []string{strconv.Itoa(fu.Total), strconv.Itoa(fu.Awaiting), strconv.Itoa(fu.Connecting),
			strconv.Itoa(fu.Connected), strconv.Itoa(fu.Reauth), strconv.Itoa(fu.Error), strconv.Itoa(fu.DropOff), ttc}
		row := append([]string{app}, counts...)
		if wide {
			share := "-"
			if fu.Total > 0 {
				share = strconv.Itoa(fu.Connected*100/fu.Total) + "%"
			}
			row = append(append([]string{orDash(fu.app.namespace), fu.app.kind, fu.app.name}, counts...), share)
		}
		rows = append(rows, row)
	}
	return newTableWriter(f.Out, f.out.noHeaders).rows(header, rows)
}

// funnelList is the funnels as the objects -o json|yaml|name|jsonpath
// print: each app as apiVersion, kind and metadata, with its "funnel".
func funnelList(funnels []Funnel) *unstructured.UnstructuredList {
	list := &unstructured.UnstructuredList{Object: map[string]any{}}
	list.SetAPIVersion("v1")
	list.SetKind("List")
	for _, fu := range funnels {
		counts, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&fu)
		if err != nil {
			// A struct of ints and a pointer to a float always converts.
			panic(fmt.Sprintf("funnel to unstructured: %v", err))
		}
		item := unstructured.Unstructured{Object: map[string]any{"funnel": counts}}
		item.SetAPIVersion(finchv1.GroupVersion.String())
		item.SetKind(fu.app.kind)
		item.SetName(fu.app.name)
		item.SetNamespace(fu.app.namespace)
		list.Items = append(list.Items, item)
	}
	return list
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
			byApp[k] = &Funnel{app: k}
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
		a, b := out[i].app, out[j].app
		if a.namespace != b.namespace {
			return a.namespace < b.namespace
		}
		if a.kind != b.kind {
			return a.kind < b.kind
		}
		return a.name < b.name
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
