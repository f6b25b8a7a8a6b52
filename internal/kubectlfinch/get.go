package kubectlfinch

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/scheme"
)

type getOptions struct {
	*Options
	app           appFilter
	output        string
	allNamespaces bool
}

func newGetCommand(o *Options) *cobra.Command {
	g := &getOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "List FinchConnections with their customer, phase, session expiry and next step",
		Long: `List FinchConnections (or show one) with the customer ID, phase, Finch connection
ID, provider, when the published Connect session expires, and the next step a
human should take.

Output formats: the default table, -o wide (adds the app: a FinchApp's name, or
ClusterFinchApp/NAME; age and Connect URL), -o yaml and -o json (the objects
themselves; status never holds secrets).`,
		Example: `  kubectl finch get
  kubectl finch get acme -o yaml
  kubectl finch get -A --app default -o wide
  kubectl finch get -A --app ClusterFinchApp/platform`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd.Context(), args)
		},
	}
	cmd.Flags().Var(&g.app, "app", "only connections of this app: "+appFlagUsage)
	cmd.Flags().StringVarP(&g.output, "output", "o", "", "output format: wide, yaml or json")
	cmd.Flags().BoolVarP(&g.allNamespaces, "all-namespaces", "A", false, "list connections in every namespace")
	return cmd
}

func (g *getOptions) run(ctx context.Context, args []string) error {
	switch g.output {
	case "", "wide", "yaml", "json":
	default:
		return fmt.Errorf("unknown output format %q: use wide, yaml or json", g.output)
	}
	var conns []finchv1.FinchConnection
	if len(args) == 1 {
		if g.allNamespaces {
			return fmt.Errorf("a NAME cannot be combined with --all-namespaces")
		}
		conn, err := g.getConnection(ctx, args[0])
		if err != nil {
			return err
		}
		if !g.app.matchesConnection(conn) {
			return fmt.Errorf("FinchConnection %q uses %s, not %s", conn.Name, conn.AppDescription(), g.app.describe())
		}
		if g.output == "yaml" || g.output == "json" {
			return printObject(g.Out, g.output, conn)
		}
		conns = []finchv1.FinchConnection{*conn}
	} else {
		var err error
		if conns, err = g.list(ctx); err != nil {
			return err
		}
		if g.output == "yaml" || g.output == "json" {
			return printObject(g.Out, g.output, &finchv1.FinchConnectionList{Items: conns})
		}
		if len(conns) == 0 {
			return g.noneFound()
		}
	}
	return g.printTable(conns)
}

// list returns the connections in scope (namespace or all, --app), sorted.
func (g *getOptions) list(ctx context.Context) ([]finchv1.FinchConnection, error) {
	return listConnections(ctx, g.Options, g.allNamespaces, &g.app)
}

func listConnections(ctx context.Context, o *Options, all bool, app *appFilter) ([]finchv1.FinchConnection, error) {
	c, err := o.Client()
	if err != nil {
		return nil, err
	}
	var opts []client.ListOption
	if !all {
		ns, err := o.Namespace()
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.InNamespace(ns))
	}
	list := &finchv1.FinchConnectionList{}
	if err := c.List(ctx, list, opts...); err != nil {
		return nil, fmt.Errorf("list FinchConnections: %w", err)
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
	return out, nil
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
	_, err := fmt.Fprintf(g.ErrOut, "No FinchConnections found in %s.\n", where)
	return err
}

func (g *getOptions) printTable(conns []finchv1.FinchConnection) error {
	now := g.Now()
	wide := g.output == "wide"
	w := printers.GetNewTabWriter(g.Out)
	header := []string{"NAME", "CUSTOMER", "PHASE", "CONNECTION", "PROVIDER", "SESSION", "NEXT"}
	if wide {
		header = []string{"NAME", "CUSTOMER", "APP", "PHASE", "CONNECTION", "PROVIDER", "SESSION", "AGE", "NEXT", "CONNECT URL"}
	}
	if g.allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	fmt.Fprintln(w, strings.Join(header, "\t"))
	for i := range conns {
		conn := &conns[i]
		st := &conn.Status
		row := []string{conn.Name, conn.Spec.CustomerID, orDash(string(st.Phase)), orDash(st.ConnectionID), orDash(st.ProviderID), sessionColumn(conn, now), nextStep(conn, now)}
		if wide {
			url := "-"
			if st.Session != nil {
				url = orDash(st.Session.ConnectURL)
			}
			row = []string{conn.Name, conn.Spec.CustomerID, appColumn(conn), orDash(string(st.Phase)), orDash(st.ConnectionID), orDash(st.ProviderID),
				sessionColumn(conn, now), duration.HumanDuration(now.Sub(conn.CreationTimestamp.Time)), nextStep(conn, now), url}
		}
		if g.allNamespaces {
			row = append([]string{conn.Namespace}, row...)
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	return w.Flush()
}

// printObject prints an object as kubectl get -o yaml|json does: with its
// apiVersion and kind, without managed fields.
func printObject(out io.Writer, format string, obj runtime.Object) error {
	obj = obj.DeepCopyObject()
	if list, ok := obj.(*finchv1.FinchConnectionList); ok {
		for i := range list.Items {
			list.Items[i].ManagedFields = nil
			// kubectl shows the kind of every item of a list.
			list.Items[i].APIVersion = finchv1.GroupVersion.String()
			list.Items[i].Kind = "FinchConnection"
		}
	}
	if conn, ok := obj.(*finchv1.FinchConnection); ok {
		conn.ManagedFields = nil
	}
	var p printers.ResourcePrinter = &printers.YAMLPrinter{}
	if format == "json" {
		p = &printers.JSONPrinter{}
	}
	if err := printers.NewTypeSetter(scheme.Scheme).ToPrinter(p).PrintObj(obj, out); err != nil {
		return fmt.Errorf("print %s: %w", format, err)
	}
	return nil
}
