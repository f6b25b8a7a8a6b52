package kubectlfinch

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/liggitt/tabwriter"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	kubectlget "k8s.io/kubectl/pkg/cmd/get"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/scheme"
)

// outputFlags is -o of the commands that print data, as kubectl get has it:
// the command's own table ("" and wide), cli-runtime's PrintFlags (json,
// yaml, name, jsonpath, go-template...) and kubectl's custom-columns.
type outputFlags struct {
	print     *genericclioptions.PrintFlags
	columns   *kubectlget.CustomColumnsPrintFlags
	noHeaders bool
}

func newOutputFlags() *outputFlags {
	return &outputFlags{
		print:   genericclioptions.NewPrintFlags("").WithTypeSetter(scheme.Scheme),
		columns: kubectlget.NewCustomColumnsPrintFlags(),
	}
}

// add binds -o (and --template, --show-managed-fields,
// --allow-missing-template-keys, --no-headers) to cmd; table says what the
// default output is, for -o's help.
func (f *outputFlags) add(cmd *cobra.Command, table string) {
	f.print.AddFlags(cmd)
	flags := cmd.Flags()
	flags.Lookup("output").Usage = "output format: " + strings.Join(f.formats(), ", ") +
		" (default: " + table + ")"
	flags.Lookup("template").Usage = "template string or file for -o go-template" +
		" or go-template-file"
	flags.Lookup("allow-missing-template-keys").Usage = "ignore a missing field or" +
		" map key in a jsonpath or go-template"
	flags.Lookup("show-managed-fields").Usage = "keep metadata.managedFields in" +
		" -o json and -o yaml"
	flags.BoolVar(&f.noHeaders, "no-headers", false,
		"omit the header line of the table and of -o custom-columns")
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return f.formats(), cobra.ShellCompDirectiveNoFileComp
	})
}

// formats are the -o values, for help and completion.
func (f *outputFlags) formats() []string {
	out := []string{"wide"}
	out = append(out, f.print.AllowedFormats()...)
	return append(out, f.columns.AllowedFormats()...)
}

// format is the -o value.
func (f *outputFlags) format() string { return *f.print.OutputFormat }

// table says whether the command prints its own table; wide, its wide one.
// --template without -o is -o go-template, as in kubectl.
func (f *outputFlags) table() (table, wide bool) {
	switch f.format() {
	case "":
		t := f.print.TemplatePrinterFlags.TemplateArgument
		return t == nil || *t == "", false
	case "wide":
		return true, true
	}
	return false, false
}

// printer is the printer of a -o format other than the tables.
func (f *outputFlags) printer() (printers.ResourcePrinter, error) {
	format := f.format()
	if slices.ContainsFunc(f.columns.AllowedFormats(), func(c string) bool {
		return format == c || strings.HasPrefix(format, c+"=")
	}) {
		f.columns.NoHeaders = f.noHeaders
		p, err := f.columns.ToPrinter(format)
		if err != nil {
			return nil, fmt.Errorf("-o %s: %w", format, err)
		}
		return p, nil
	}
	p, err := f.print.ToPrinter()
	if genericclioptions.IsNoCompatiblePrinterError(err) {
		return nil, fmt.Errorf("unknown output format %q: use one of %s", format, strings.Join(f.formats(), ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("-o %s: %w", format, err)
	}
	return p, nil
}

// validate fails early on a -o the command cannot print.
func (f *outputFlags) validate() error {
	if table, _ := f.table(); table {
		return nil
	}
	_, err := f.printer()
	return err
}

// printObject prints obj with the -o printer.
func (f *outputFlags) printObject(out io.Writer, obj runtime.Object) error {
	p, err := f.printer()
	if err != nil {
		return err
	}
	obj, err = printable(obj)
	if err != nil {
		return err
	}
	if err := p.PrintObj(obj, out); err != nil {
		return fmt.Errorf("print -o %s: %w", f.format(), err)
	}
	return nil
}

// printable is obj as kubectl get prints it: a typed list becomes a v1 List
// whose items carry their apiVersion and kind (the typed client leaves them
// empty; -o name needs them, and prints no other kind of list).
func printable(obj runtime.Object) (runtime.Object, error) {
	if !meta.IsListType(obj) {
		return obj, nil
	}
	if _, ok := obj.(*unstructured.UnstructuredList); ok {
		return obj, nil
	}
	list := &unstructured.UnstructuredList{Object: map[string]any{}}
	list.SetAPIVersion("v1")
	list.SetKind("List")
	err := meta.EachListItem(obj, func(item runtime.Object) error {
		item = item.DeepCopyObject()
		if item.GetObjectKind().GroupVersionKind().Empty() {
			gvks, _, err := scheme.Scheme.ObjectKinds(item)
			if err != nil {
				return fmt.Errorf("kind of %T: %w", item, err)
			}
			item.GetObjectKind().SetGroupVersionKind(gvks[0])
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(item)
		if err != nil {
			return fmt.Errorf("convert %T: %w", item, err)
		}
		list.Items = append(list.Items, unstructured.Unstructured{Object: u})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return list, nil
}

// connectionList is conns as the API lists them.
func connectionList(conns []finchv1.FinchConnection) *finchv1.FinchConnectionList {
	return &finchv1.FinchConnectionList{Items: conns}
}

// tableWriter is a table that may grow row by row (get --watch): the columns
// keep the widths of earlier rows, as in kubectl get --watch.
type tableWriter struct {
	w         *tabwriter.Writer
	noHeaders bool
	header    bool
}

func newTableWriter(out io.Writer, noHeaders bool) *tableWriter {
	return &tableWriter{w: printers.GetNewTabWriter(out), noHeaders: noHeaders}
}

// rows prints the header once, then rows, and flushes.
func (t *tableWriter) rows(header []string, rows [][]string) error {
	if !t.header && !t.noHeaders {
		fmt.Fprintln(t.w, strings.Join(header, "\t"))
	}
	t.header = true
	for _, r := range rows {
		fmt.Fprintln(t.w, strings.Join(r, "\t"))
	}
	return t.w.Flush()
}
