package docs_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// root is the repository, seen from this package's directory.
const root = "../.."

// TestTroubleshootingListsEveryReason keeps the reason tables of
// docs/troubleshooting.md equal to the reasons the code can write: every
// exported Reason constant of api/v1alpha1/reasons.go, and every FinchApp
// configuration reason of internal/apps (ConfigError{Reason: "..."} and the
// not-found reasons passed to readSecret). A reason added to the code without
// a row, or a row for a reason the code no longer has, fails.
func TestTroubleshootingListsEveryReason(t *testing.T) {
	want := map[string]string{}
	for _, r := range reasonConstants(t, filepath.Join(root, "api/v1alpha1/reasons.go")) {
		want[r] = "api/v1alpha1/reasons.go"
	}
	if len(want) < 20 {
		t.Fatalf("found only %d Reason constants in api/v1alpha1/reasons.go: has the file moved?", len(want))
	}
	for _, r := range configErrorReasons(t, filepath.Join(root, "internal/apps")) {
		if _, ok := want[r]; !ok {
			want[r] = "internal/apps (FinchApp configuration)"
		}
	}
	got := documentedReasons(t, filepath.Join(root, "docs/troubleshooting.md"))
	var missing, extra []string
	for r, from := range want {
		if !got[r] {
			missing = append(missing, r+" (from "+from+")")
		}
	}
	for r := range got {
		if _, ok := want[r]; !ok {
			extra = append(extra, r)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("docs/troubleshooting.md has no row for %d reasons the code writes: %s", len(missing), strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		t.Errorf("docs/troubleshooting.md documents %d reasons the code does not have: %s", len(extra), strings.Join(extra, ", "))
	}
}

// reasonConstants returns the values of the exported Reason* string constants in file.
func reasonConstants(t *testing.T, file string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if !n.IsExported() || !strings.HasPrefix(n.Name, "Reason") || i >= len(vs.Values) {
					continue
				}
				if v, ok := stringLit(vs.Values[i]); ok {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

var camelCase = regexp.MustCompile(`^[A-Z][A-Za-z]+$`)

// configErrorReasons returns the literal reasons of the FinchApp
// configuration errors in the package at dir.
func configErrorReasons(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				if id, ok := n.Type.(*ast.Ident); ok && id.Name == "ConfigError" {
					for _, e := range n.Elts {
						if kv, ok := e.(*ast.KeyValueExpr); ok {
							if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Reason" {
								if v, ok := stringLit(kv.Value); ok {
									out = append(out, v)
								}
							}
						}
					}
				}
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "readSecret" {
					for _, a := range n.Args {
						if v, ok := stringLit(a); ok && camelCase.MatchString(v) {
							out = append(out, v)
						}
					}
				}
			}
			return true
		})
	}
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	v, err := strconv.Unquote(bl.Value)
	return v, err == nil
}

var codeSpan = regexp.MustCompile("`([A-Za-z]+)`")

// documentedReasons returns the reasons named (in backticks) in the first
// column of every table of file whose header's first cell is "Reason".
func documentedReasons(t *testing.T, file string) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	inTable := false
	for _, line := range strings.Split(readFile(t, file), "\n") {
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := strings.Split(line, "|")
		first := strings.TrimSpace(cells[1])
		switch {
		case first == "Reason":
			inTable = true
		case inTable && !strings.HasPrefix(first, "---"):
			for _, m := range codeSpan.FindAllStringSubmatch(first, -1) {
				got[m[1]] = true
			}
		}
	}
	if len(got) == 0 {
		t.Fatalf("%s has no table whose first column is Reason", file)
	}
	return got
}
