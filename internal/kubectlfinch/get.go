package kubectlfinch

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

type getOptions struct {
	*Options
	app           appFilter
	selector      string
	out           *outputFlags
	allNamespaces bool
	watch         bool
	watchOnly     bool
}

func newGetCommand(o *Options) *cobra.Command {
	g := &getOptions{Options: o, out: newOutputFlags()}
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "List FinchConnections: customer, phase, session expiry, next step",
		Long: `List FinchConnections (or show one) with the customer ID, phase, Finch
connection ID, provider, when the published Connect session expires, and the
next step a human should take.

-o wide adds the app (a FinchApp's name, or ClusterFinchApp/NAME), the Ready
reason, the age and the Connect URL. -o json, yaml, name, jsonpath=... and
custom-columns=... print the objects as kubectl get does (status never holds
secrets).

--watch prints the table, then a row each time a connection changes, until
interrupted (Ctrl-C).`,
		Example: `  kubectl finch get
  kubectl finch get acme -o yaml
  kubectl finch get -A --app default -o wide
  kubectl finch get -A --app ClusterFinchApp/platform
  kubectl finch get -l team=payroll -o name
  kubectl finch get -o jsonpath='{.items[*].status.phase}'
  kubectl finch get -o custom-columns=NAME:.metadata.name,ID:.spec.customerID
  kubectl finch get --watch`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: o.completeConnections,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd.Context(), args)
		},
	}
	flags := cmd.Flags()
	flags.Var(&g.app, "app", "only connections of this app: "+appFlagUsage)
	flags.StringVarP(&g.selector, "selector", "l", "",
		"label selector (e.g. team=payroll,tier!=test)")
	flags.BoolVarP(&g.allNamespaces, "all-namespaces", "A", false,
		"list connections in every namespace")
	flags.BoolVarP(&g.watch, "watch", "w", false,
		"after listing, print each change until interrupted")
	flags.BoolVar(&g.watchOnly, "watch-only", false,
		"print changes only, without the list first")
	g.out.add(cmd, "a table")
	o.registerAppCompletion(cmd)
	return cmd
}

func (g *getOptions) run(ctx context.Context, args []string) error {
	if err := g.out.validate(); err != nil {
		return err
	}
	sel, err := parseSelector(g.selector)
	if err != nil {
		return err
	}
	if len(args) == 1 && g.allNamespaces {
		return fmt.Errorf("a NAME cannot be combined with --all-namespaces")
	}
	if len(args) == 1 && g.selector != "" {
		return fmt.Errorf("a NAME cannot be combined with --selector")
	}
	if g.watch || g.watchOnly {
		return g.runWatch(ctx, args, sel)
	}
	var conns []finchv1.FinchConnection
	if len(args) == 1 {
		conn, err := g.getConnection(ctx, args[0])
		if err != nil {
			return err
		}
		if !g.app.matchesConnection(conn) {
			return fmt.Errorf("FinchConnection %q uses %s, not %s", conn.Name, conn.AppDescription(), g.app.describe())
		}
		if table, _ := g.out.table(); !table {
			return g.out.printObject(g.Out, conn)
		}
		conns = []finchv1.FinchConnection{*conn}
	} else {
		if conns, _, err = listConnections(ctx, g.Options, g.allNamespaces, &g.app, sel); err != nil {
			return err
		}
		if table, _ := g.out.table(); !table {
			return g.out.printObject(g.Out, connectionList(conns))
		}
		if len(conns) == 0 {
			return g.noneFound()
		}
	}
	return g.newTable().print(conns)
}

// listConnections returns the connections in scope (namespace or all, --app,
// -l), sorted, and the list's resourceVersion (where a watch starts).
func listConnections(ctx context.Context, o *Options, all bool, app *appFilter, sel labels.Selector) ([]finchv1.FinchConnection, string, error) {
	c, err := o.Client()
	if err != nil {
		return nil, "", err
	}
	opts, err := o.listOptions(all, sel)
	if err != nil {
		return nil, "", err
	}
	return listWith(ctx, c, opts, app)
}

// listWith lists with opts, keeps the connections of app, and sorts them.
func listWith(ctx context.Context, c client.Client, opts *client.ListOptions, app *appFilter) ([]finchv1.FinchConnection, string, error) {
	list := &finchv1.FinchConnectionList{}
	if err := c.List(ctx, list, opts); err != nil {
		return nil, "", fmt.Errorf("list FinchConnections: %w", err)
	}
	out := list.Items[:0]
	for _, conn := range list.Items {
		if app.matchesConnection(&conn) {
			out = append(out, conn)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, list.ResourceVersion, nil
}

// listOptions are the namespace (unless all) and the label selector.
func (o *Options) listOptions(all bool, sel labels.Selector) (*client.ListOptions, error) {
	opts := &client.ListOptions{LabelSelector: sel}
	if !all {
		ns, err := o.Namespace()
		if err != nil {
			return nil, err
		}
		opts.Namespace = ns
	}
	return opts, nil
}

// parseSelector parses -l (empty: everything).
func parseSelector(s string) (labels.Selector, error) {
	if s == "" {
		return labels.Everything(), nil
	}
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--selector %q: %w", s, err)
	}
	return sel, nil
}

func (g *getOptions) noneFound() error {
	where := "any namespace"
	if !g.allNamespaces {
		ns, err := g.Namespace()
		if err != nil {
			return err
		}
		where = "namespace " + ns
	}
	if g.app.isSet() {
		where += " for " + g.app.kind + " " + g.app.name
	}
	if g.selector != "" {
		where += " matching " + g.selector
	}
	_, err := fmt.Fprintf(g.ErrOut, "No FinchConnections found in %s.\n", where)
	return err
}

// connTable prints connections as get's table (or wide table), row by row.
type connTable struct {
	*tableWriter
	now         func() time.Time
	wide, allNs bool
	// printed is each connection's last row: get --watch prints a row only
	// when it differs (the operator's status writes often change no column).
	printed map[types.UID]string
}

func (g *getOptions) newTable() *connTable {
	_, wide := g.out.table()
	return &connTable{tableWriter: newTableWriter(g.Out, g.out.noHeaders), now: g.Now, wide: wide, allNs: g.allNamespaces,
		printed: map[types.UID]string{}}
}

func (t *connTable) print(conns []finchv1.FinchConnection) error {
	now := t.now()
	header := []string{"NAME", "CUSTOMER", "PHASE", "CONNECTION", "PROVIDER", "SESSION", "NEXT"}
	if t.wide {
		header = []string{"NAME", "CUSTOMER", "APP", "PHASE", "REASON", "CONNECTION", "PROVIDER", "SESSION", "AGE", "NEXT", "CONNECT URL"}
	}
	if t.allNs {
		header = append([]string{"NAMESPACE"}, header...)
	}
	rows := make([][]string, 0, len(conns))
	for i := range conns {
		conn := &conns[i]
		st := &conn.Status
		row := []string{conn.Name, conn.Spec.CustomerID, orDash(string(st.Phase)), orDash(st.ConnectionID), orDash(st.ProviderID), sessionColumn(conn, now), nextStep(conn, now)}
		if t.wide {
			url, reason := "-", "-"
			if st.Session != nil {
				url = orDash(st.Session.ConnectURL)
			}
			if ready := condition(conn, finchv1.ConditionReady); ready != nil {
				reason = orDash(ready.Reason)
			}
			row = []string{conn.Name, conn.Spec.CustomerID, appColumn(conn), orDash(string(st.Phase)), reason, orDash(st.ConnectionID), orDash(st.ProviderID),
				sessionColumn(conn, now), duration.HumanDuration(now.Sub(conn.CreationTimestamp.Time)), nextStep(conn, now), url}
		}
		if t.allNs {
			row = append([]string{conn.Namespace}, row...)
		}
		if line := strings.Join(row, "\t"); t.printed[conn.UID] != line {
			t.printed[conn.UID] = line
			rows = append(rows, row)
		}
	}
	return t.rows(header, rows)
}
