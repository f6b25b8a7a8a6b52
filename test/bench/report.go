package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one line of the summary table.
type row struct {
	Section string `json:"section"`
	Metric  string `json:"metric"`
	Value   string `json:"value"`
	Goal    string `json:"goal,omitempty"`
	Status  string `json:"status,omitempty"` // PASS, MISS, INFO
}

type report struct {
	Title  string            `json:"title"`
	Meta   map[string]string `json:"meta"`
	Rows   []row             `json:"rows"`
	Errors []string          `json:"errors,omitempty"`
}

// newReport starts the report of a run with what every run records about itself.
func newReport(title string, c common) *report {
	r := &report{Title: title, Meta: map[string]string{
		"date":          time.Now().UTC().Format(time.RFC3339),
		"machine":       machine(),
		"load at start": loadAvg(),
		"manager":       managerDesc(c),
		"run dir":       c.runDir,
	}}
	if len(c.managerEnv) > 0 {
		r.Meta["manager env"] = strings.Join(c.managerEnv, " ")
	}
	return r
}

func machine() string {
	host, _ := os.Hostname()
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimLeft(v, "\t :"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1] + " kB RAM"
	}
	return fmt.Sprintf("%s, %d CPUs (%s), %s, %s %s/%s", host, runtime.NumCPU(), cpu, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func managerDesc(c common) string {
	switch {
	case c.inProcess:
		return "in-process (profiling mode) " + strings.Join(c.managerArgs, " ")
	case len(c.managerArgs) == 0:
		return c.managerBin + " (production defaults, " + simHostsFlag + " for the simulators)"
	}
	return c.managerBin + " " + simHostsFlag + " " + strings.Join(c.managerArgs, " ")
}

func (r *report) add(section, metric, value string) {
	r.Rows = append(r.Rows, row{Section: section, Metric: metric, Value: value, Status: "INFO"})
}

// goal adds a row that is checked against a goal.
func (r *report) goal(section, metric, value, goal string, ok bool) {
	st := "PASS"
	if !ok {
		st = "MISS"
	}
	r.Rows = append(r.Rows, row{Section: section, Metric: metric, Value: value, Goal: goal, Status: st})
}

func (r *report) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	logf("ERROR: %s", msg)
	r.Errors = append(r.Errors, msg)
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n==== %s ====\n", r.Title)
	keys := make([]string, 0, len(r.Meta))
	for k := range r.Meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%-18s %s\n", k+":", r.Meta[k])
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SECTION\tMETRIC\tVALUE\tGOAL\tSTATUS")
	for _, x := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.Section, x.Metric, x.Value, dash(x.Goal), x.Status)
	}
	tw.Flush()
	if len(r.Errors) > 0 {
		fmt.Fprintf(w, "\nERRORS (%d):\n", len(r.Errors))
		for _, e := range r.Errors {
			fmt.Fprintf(w, "  - %s\n", e)
		}
	}
	miss := 0
	for _, x := range r.Rows {
		if x.Status == "MISS" {
			miss++
		}
	}
	fmt.Fprintf(w, "\ngoals missed: %d, errors: %d\n", miss, len(r.Errors))
}

// markdown writes the table as GitHub markdown (for docs/benchmarks.md).
func (r *report) markdown(w io.Writer) {
	fmt.Fprintln(w, "| Section | Metric | Value | Goal | Status |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, x := range r.Rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", x.Section, x.Metric, strings.ReplaceAll(x.Value, "|", "/"), dash(x.Goal), x.Status)
	}
}

func (r *report) save(dir string) {
	b, _ := json.MarshalIndent(r, "", "  ")
	_ = os.WriteFile(dir+"/results.json", b, 0o644)
	f, err := os.Create(dir + "/results.md")
	if err == nil {
		r.markdown(f)
		f.Close()
	}
	f, err = os.Create(dir + "/summary.txt")
	if err == nil {
		r.print(f)
		f.Close()
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// perConn formats endpoint or method counts divided by n.
func perConn[V int | float64](m map[string]V, n int, order []string) string {
	if n == 0 {
		return "-"
	}
	keys := order
	if keys == nil {
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
	}
	var parts []string
	total := 0.0
	for _, k := range keys {
		v := float64(m[k])
		total += v
		if v == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.3f", k, v/float64(n)))
	}
	if len(parts) == 0 {
		return "0"
	}
	return fmt.Sprintf("%.3f (%s)", total/float64(n), strings.Join(parts, ", "))
}

func mapInts(m map[string]float64) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}
