package kubectlfinch

import (
	"fmt"
	"io"
	"strings"

	"github.com/liggitt/tabwriter"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/scheme"
)

// outputFlags is -o of the commands that print data, as kubectl get has it:
// the command's own table ("" and wide), the printers of cli-runtime's
// PrintFlags (json, yaml, kyaml, name, jsonpath and its forms) and kubectl's
// custom-columns.
//
// Not go-template: its text/template makes the linker keep every exported
// method of every type (40 MB instead of 30), and jsonpath and custom-columns
// answer the same questions. cobra's help templates are avoided for the same
// reason (usage is written by usage, not a template).
type outputFlags struct {
	print     *genericclioptions.PrintFlags
	noHeaders bool
	// p is the printer, made once: get --watch prints with it again and
	// again (custom-columns prints its header once).
	p printers.ResourcePrinter
}

func newOutputFlags() *outputFlags {
	return &outputFlags{print: genericclioptions.NewPrintFlags("").WithTypeSetter(scheme.Scheme)}
}

// add binds -o, --template, --allow-missing-template-keys,
// --show-managed-fields and --no-headers to cmd; table says what the
// default output is, for -o's help.
func (f *outputFlags) add(cmd *cobra.Command, table string) {
	flags := cmd.Flags()
	flags.StringVarP(f.print.OutputFormat, "output", "o", "", "output format: "+
		strings.Join(f.formats(), ", ")+" (default: "+table+")")
	tf := f.print.TemplatePrinterFlags
	flags.StringVar(tf.TemplateArgument, "template", "",
		"the JSONPath template (or its file) of -o jsonpath (-o jsonpath-file)")
	flags.BoolVar(tf.AllowMissingKeys, "allow-missing-template-keys", true,
		"ignore a missing field or map key in a JSONPath")
	flags.BoolVar(&f.print.JSONYamlPrintFlags.ShowManagedFields, "show-managed-fields", false,
		"keep metadata.managedFields in -o json and -o yaml")
	flags.BoolVar(&f.noHeaders, "no-headers", false,
		"omit the header line of the table and of -o custom-columns")
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return f.formats(), cobra.ShellCompDirectiveNoFileComp
	})
}

// formats are the -o values, for help and completion.
func (f *outputFlags) formats() []string {
	out := []string{"wide"}
	out = append(out, f.print.JSONYamlPrintFlags.AllowedFormats()...)
	out = append(out, f.print.NamePrintFlags.AllowedFormats()...)
	out = append(out, f.print.TemplatePrinterFlags.JSONPathPrintFlags.AllowedFormats()...)
	return append(out, columnsFormats...)
}

// format is the -o value.
func (f *outputFlags) format() string { return *f.print.OutputFormat }

// table says whether the command prints its own table; wide, its wide one.
func (f *outputFlags) table() (table, wide bool) {
	switch f.format() {
	case "":
		return true, false
	case "wide":
		return true, true
	}
	return false, false
}

// printer is the printer of a -o format other than the tables.
func (f *outputFlags) printer() (printers.ResourcePrinter, error) {
	if f.p != nil {
		return f.p, nil
	}
	format := f.format()
	var p printers.ResourcePrinter
	var err error
	switch {
	case isColumnsFormat(format):
		p, err = newColumnsPrinter(format, f.noHeaders)
	default:
		p, err = f.cliRuntimePrinter(format)
		if genericclioptions.IsNoCompatiblePrinterError(err) {
			return nil, fmt.Errorf("unknown output format %q: use one of %s", format, strings.Join(f.formats(), ", "))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("-o %s: %w", format, err)
	}
	f.p = p
	return p, nil
}

// cliRuntimePrinter is PrintFlags.ToPrinter without its go-template branch.
func (f *outputFlags) cliRuntimePrinter(format string) (printers.ResourcePrinter, error) {
	wrap := f.print.TypeSetterPrinter.WrapToPrinter
	if p, err := f.print.JSONYamlPrintFlags.ToPrinter(format); !genericclioptions.IsNoCompatiblePrinterError(err) {
		return wrap(p, err)
	}
	if p, err := f.print.NamePrintFlags.ToPrinter(format); !genericclioptions.IsNoCompatiblePrinterError(err) {
		return wrap(p, err)
	}
	p, err := f.print.TemplatePrinterFlags.JSONPathPrintFlags.ToPrinter(format)
	if genericclioptions.IsNoCompatiblePrinterError(err) {
		return nil, err
	}
	return wrap(p, err)
}

// validate fails early on a -o the command cannot print, and on --template
// without -o (which is -o go-template in kubectl).
func (f *outputFlags) validate() error {
	if t := f.print.TemplatePrinterFlags.TemplateArgument; t != nil && *t != "" && f.format() == "" {
		return fmt.Errorf("--template goes with -o jsonpath or -o jsonpath-file (go-template is not offered)")
	}
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
