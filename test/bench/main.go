// Command bench is the finch-operator's scale/economy benchmark (`make bench`)
// and resilience soak (`make soak`). Both run a real API server (envtest),
// the Finch simulator (in this process, on 127.0.0.1) and the operator as a
// separate bin/manager process with cmd/manager's defaults, print a summary
// table and stop by themselves.
//
//	go run ./test/bench -mode bench -n 2000
//	go run ./test/bench -mode soak -n 500
//
// See docs/benchmarks.md for what is measured and how to read it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	wiring "github.com/connectops/finch-operator/internal/operator"
	"github.com/connectops/finch-operator/internal/testenv"
)

// common are the settings both modes share.
type common struct {
	n, workers  int
	managerBin  string
	managerArgs []string // on top of cmd/manager's defaults
	managerEnv  []string
	inProcess   bool
	runDir      string
	timeout     time.Duration
	reauthFrac  float64 // connections connected and then flipped to reauth
}

func main() { os.Exit(run()) }

// run is main with an exit code, so that its deferred calls run.
func run() int {
	var c common
	var b benchConfig
	var s soakConfig
	mode := flag.String("mode", "bench", "bench (scale and economy) or soak (resilience)")
	c.bindFlags()
	b.bindFlags()
	s.bindFlags()
	verbose := flag.Bool("v", false, "log the in-process controllers and client-go")
	flag.Parse()
	setupLogs(*verbose)

	// -workers is the manager's concurrency unless its args say otherwise.
	if c.workers != wiring.DefaultWorkers && !slices.ContainsFunc(c.managerArgs, func(a string) bool { return strings.Contains(a, "max-concurrent-reconciles") }) {
		c.managerArgs = append(c.managerArgs, fmt.Sprintf("--max-concurrent-reconciles=%d", c.workers))
	}
	if c.runDir == "" {
		c.runDir = filepath.Join(testenv.RepoRoot(), "bin", "bench-runs", *mode+"-"+time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(c.runDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	commit := gitDescribe() // at the start: the tree may move during a long run
	var rep *report
	switch *mode {
	case "bench":
		b.common = c
		rep = b.run(ctx)
	case "soak":
		c.inProcess = false // SIGKILLs need processes
		s.common = c
		rep = s.run(ctx)
	default:
		fmt.Fprintf(os.Stderr, "unknown -mode %q\n", *mode)
		return 2
	}
	rep.Meta["commit"] = commit
	rep.Meta["load at end"] = loadAvg()
	rep.save(c.runDir)
	rep.print(os.Stdout)
	fmt.Printf("\nresults: %s/results.md (logs of each manager process beside it)\n", c.runDir)
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}

func (c *common) bindFlags() {
	flag.IntVar(&c.n, "n", 0, "FinchConnections (default 2000 for bench, 500 for soak)")
	flag.IntVar(&c.workers, "workers", wiring.DefaultWorkers, "the manager's --max-concurrent-reconciles (also the bench's create/patch concurrency)")
	flag.StringVar(&c.managerBin, "manager", filepath.Join(testenv.RepoRoot(), "bin", "manager"), "the manager binary")
	flag.Func("manager-args", "extra manager flags, space-separated (e.g. \"--kube-api-qps=200 --kube-api-burst=400\")", func(v string) error {
		c.managerArgs = strings.Fields(v)
		return nil
	})
	flag.Func("manager-env", "extra environment for the manager processes, space-separated (e.g. \"GOGC=50 GOMEMLIMIT=150MiB\")", func(v string) error {
		c.managerEnv = strings.Fields(v)
		return nil
	})
	flag.BoolVar(&c.inProcess, "in-process", false, "bench: run the controllers inside the bench (for -cpuprofile/-memprofile; RSS is then not measured)")
	flag.StringVar(&c.runDir, "run-dir", "", "directory for logs and results (default bin/bench-runs/<mode>-<time>)")
	flag.DurationVar(&c.timeout, "timeout", 0, "overall limit (default 90m for bench, 20m for soak)")
	flag.Float64Var(&c.reauthFrac, "storm-fraction", 0.1, "fraction of connections connected and then flipped to reauth")
	flag.StringVar(&crdDir, "crd-dir", "", "CRD directory to install (default config/crd/bases)")
}

func setupLogs(verbose bool) {
	if verbose {
		ctrl.SetLogger(zap.New())
		return
	}
	klog.SetOutput(discard{})
	klog.LogToStderr(false)
	ctrl.SetLogger(logr.Discard())
}

// gitDescribe is the commit under test ("+dirty" with local changes).
func gitDescribe() string {
	root := testenv.RepoRoot()
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "+dirty"
	}
	return c
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
