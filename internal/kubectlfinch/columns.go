package kubectlfinch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/util/jsonpath"
)

// columnsFormats are kubectl's -o custom-columns=HEADER:JSONPATH,... and
// -o custom-columns-file=FILE (a line of headers, a line of JSONPaths).
// cli-runtime has no printer for them; kubectl's own (k8s.io/kubectl
// pkg/cmd/get/customcolumn.go) comes with kubectl's whole scheme and
// translations, 13 MB more in the binary, so this is the same format on
// client-go's jsonpath.
var columnsFormats = []string{"custom-columns", "custom-columns-file"}

// isColumnsFormat says whether -o asks for custom columns.
func isColumnsFormat(format string) bool {
	kind, _, _ := strings.Cut(format, "=")
	return kind == columnsFormats[0] || kind == columnsFormats[1]
}

// columnsPrinter prints one row per object (per item of a list), the header
// once.
type columnsPrinter struct {
	headers   []string
	paths     []*jsonpath.JSONPath
	noHeaders bool
	printed   bool
}

func newColumnsPrinter(format string, noHeaders bool) (*columnsPrinter, error) {
	kind, value, _ := strings.Cut(format, "=")
	var headers, specs []string
	switch {
	case value == "":
		return nil, fmt.Errorf("-o %s needs a value: -o custom-columns=NAME:.metadata.name,... or -o custom-columns-file=FILE", kind)
	case kind == "custom-columns":
		for _, col := range strings.Split(value, ",") {
			h, spec, ok := strings.Cut(col, ":")
			if !ok || h == "" || spec == "" {
				return nil, fmt.Errorf("-o custom-columns: %q is not HEADER:JSONPATH", col)
			}
			headers, specs = append(headers, h), append(specs, spec)
		}
	default:
		raw, err := os.ReadFile(value)
		if err != nil {
			return nil, fmt.Errorf("-o custom-columns-file: %w", err)
		}
		var lines []string
		for _, l := range strings.Split(string(raw), "\n") {
			if strings.TrimSpace(l) != "" {
				lines = append(lines, l)
			}
		}
		if len(lines) != 2 {
			return nil, fmt.Errorf("-o custom-columns-file %s: want a line of headers and a line of JSONPaths", value)
		}
		headers, specs = strings.Fields(lines[0]), strings.Fields(lines[1])
		if len(headers) != len(specs) {
			return nil, fmt.Errorf("-o custom-columns-file %s: %d headers, %d JSONPaths", value, len(headers), len(specs))
		}
	}
	p := &columnsPrinter{headers: headers, noHeaders: noHeaders}
	for i, spec := range specs {
		expr, err := relaxedJSONPath(spec)
		if err != nil {
			return nil, fmt.Errorf("-o %s: column %s: %w", kind, headers[i], err)
		}
		jp := jsonpath.New(headers[i]).AllowMissingKeys(true)
		if err := jp.Parse(expr); err != nil {
			return nil, fmt.Errorf("-o %s: column %s: %w", kind, headers[i], err)
		}
		p.paths = append(p.paths, jp)
	}
	return p, nil
}

var relaxedPath = regexp.MustCompile(`^\{\.?([^{}]+)\}$|^\.?([^{}]+)$`)

// relaxedJSONPath accepts what kubectl's custom columns accept (a.b, .a.b,
// {a.b}, {.a.b}) and returns {.a.b}.
func relaxedJSONPath(spec string) (string, error) {
	m := relaxedPath.FindStringSubmatch(spec)
	if m == nil {
		return "", errors.New("want a JSONPath such as .metadata.name")
	}
	return "{." + m[1] + m[2] + "}", nil
}

func (p *columnsPrinter) PrintObj(obj runtime.Object, out io.Writer) error {
	items := []runtime.Object{obj}
	if meta.IsListType(obj) {
		var err error
		if items, err = meta.ExtractList(obj); err != nil {
			return err
		}
	}
	w := printers.GetNewTabWriter(out)
	if !p.noHeaders && !p.printed {
		fmt.Fprintln(w, strings.Join(p.headers, "\t"))
	}
	p.printed = true
	for _, item := range items {
		var content map[string]any
		if u, ok := item.(runtime.Unstructured); ok {
			content = u.UnstructuredContent()
		} else {
			var err error
			if content, err = runtime.DefaultUnstructuredConverter.ToUnstructured(item); err != nil {
				return fmt.Errorf("convert %T: %w", item, err)
			}
		}
		cols := make([]string, len(p.paths))
		for i, jp := range p.paths {
			results, err := jp.FindResults(content)
			if err != nil {
				return fmt.Errorf("column %s: %w", p.headers[i], err)
			}
			var values []string
			for _, r := range results {
				for _, v := range r {
					values = append(values, printers.EscapeTerminal(fmt.Sprint(v.Interface())))
				}
			}
			if len(values) == 0 {
				values = []string{"<none>"}
			}
			cols[i] = strings.Join(values, ",")
		}
		fmt.Fprintln(w, strings.Join(cols, "\t"))
	}
	return w.Flush()
}
