// Command bench is the finch-operator's scale/economy benchmark (`make bench`)
// and resilience soak (`make soak`). Both run a real API server (envtest),
// the Finch simulator (in this process, on 127.0.0.1) and the operator as a
// separate bin/manager process, print a summary table and stop by themselves.
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
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/connectops/finch-operator/internal/testenv"
)

func main() {
	var (
		mode        = flag.String("mode", "bench", "bench (scale and economy) or soak (resilience)")
		n           = flag.Int("n", 0, "FinchConnections (default 2000 for bench, 500 for soak)")
		workers     = flag.Int("workers", 10, "the manager's --max-concurrent-reconciles (also the bench's create/patch concurrency)")
		managerBin  = flag.String("manager", filepath.Join(testenv.RepoRoot(), "bin", "manager"), "the manager binary")
		managerArgs = flag.String("manager-args", "", "extra manager flags, space-separated (e.g. \"--kube-api-qps=200 --kube-api-burst=400\")")
		inProcess   = flag.Bool("in-process", false, "run the controllers inside the bench (for -cpuprofile/-memprofile; RSS is then not measured)")
		runDir      = flag.String("run-dir", "", "directory for logs and results (default bin/bench-runs/<mode>-<time>)")
		gcWait      = flag.Duration("gc-wait", 130*time.Second, "how long to wait for a GC cycle before reading heap in use")
		bareQPS     = flag.Float64("bare-qps", 0, "client-side QPS of the bare client (0: unthrottled)")
		bareEvents  = flag.Bool("bare-events", false, "also run the bare client with one Event per object (what the operator's SessionCreated Event costs)")
		econN       = flag.Int("econ-n", 0, "FinchConnections in the economy phase (default N)")
		econReq     = flag.Int("econ-requests", 600, "economy budget: requests per window (FinchApp.spec.rateLimit and simulator limit)")
		econWin     = flag.Duration("econ-window", 10*time.Second, "economy budget window")
		stormFrac   = flag.Float64("storm-fraction", 0.1, "fraction of connections connected and then flipped to reauth")
		skip        = flag.String("skip", "", "comma-separated phases to skip: bare,memory,storm,restart,econ")
		cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the bench process (use with -in-process)")
		memProfile  = flag.String("memprofile", "", "write a heap profile at the end (use with -in-process)")
		timeout     = flag.Duration("timeout", 0, "overall limit (default 45m for bench, 20m for soak)")
		seed        = flag.Uint64("seed", 0, "soak: random seed (0: from the clock)")
		soakReq     = flag.Int("soak-requests", 200, "soak: budget requests per window (FinchApp and simulator)")
		soakWin     = flag.Duration("soak-window", 5*time.Second, "soak: budget window")
		verbose     = flag.Bool("v", false, "log the in-process controllers and client-go")
		pprofOn     = flag.Bool("pprof", false, "bench: profile the manager process via --pprof-bind-address (CPU during phase A, heap after it) into the run dir")
		pprofSecs   = flag.Int("pprof-seconds", 30, "bench: length of the CPU profile from the start of phase A")
	)
	flag.StringVar(&crdDir, "crd-dir", "", "CRD directory to install (default config/crd/bases)")
	menv := flag.String("manager-env", "", "extra environment for the manager processes, space-separated (e.g. \"GOGC=50 GOMEMLIMIT=150MiB\")")
	flag.Parse()
	managerEnv = strings.Fields(*menv)
	if !*verbose {
		klog.SetOutput(discard{})
		klog.LogToStderr(false)
	}
	if *verbose {
		ctrl.SetLogger(zap.New())
	} else {
		ctrl.SetLogger(logr.Discard())
	}

	if *runDir == "" {
		*runDir = filepath.Join(testenv.RepoRoot(), "bin", "bench-runs", *mode+"-"+time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(*runDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// -workers is the manager's concurrency unless its args say otherwise.
	margs := strings.Fields(*managerArgs)
	if !strings.Contains(*managerArgs, "max-concurrent-reconciles") {
		margs = append(margs, fmt.Sprintf("--max-concurrent-reconciles=%d", *workers))
	}
	commit := gitDescribe() // at the start: the tree may move during a long run
	var rep *report
	switch *mode {
	case "bench":
		if *n == 0 {
			*n = 2000
		}
		if *econN == 0 {
			*econN = *n
		}
		if *timeout == 0 {
			*timeout = 45 * time.Minute
		}
		skips := map[string]bool{}
		for _, s := range strings.Split(*skip, ",") {
			if s != "" {
				skips[strings.TrimSpace(s)] = true
			}
		}
		rep = runBench(ctx, benchConfig{
			n: *n, workers: *workers, managerBin: *managerBin, managerArgs: margs,
			inProcess: *inProcess, runDir: *runDir, gcWait: *gcWait, bareQPS: *bareQPS, bareEvents: *bareEvents,
			econN: *econN, econRequests: *econReq, econWindow: *econWin, stormFrac: *stormFrac,
			skip: skips, cpuProfile: *cpuProfile, memProfile: *memProfile, timeout: *timeout,
			pprof: *pprofOn, pprofSeconds: *pprofSecs,
		})
	case "soak":
		if *n == 0 {
			*n = 500
		}
		if *timeout == 0 {
			*timeout = 20 * time.Minute
		}
		if *seed == 0 {
			*seed = uint64(time.Now().UnixNano())
		}
		rep = runSoak(ctx, soakConfig{
			n: *n, workers: *workers, managerBin: *managerBin, managerArgs: margs,
			runDir: *runDir, seed: *seed, timeout: *timeout, requests: *soakReq, window: *soakWin, reauthFrac: *stormFrac,
		})
	default:
		fmt.Fprintf(os.Stderr, "unknown -mode %q\n", *mode)
		os.Exit(2)
	}
	rep.Meta["commit"] = commit
	rep.save(*runDir)
	rep.print(os.Stdout)
	fmt.Printf("\nresults: %s/results.md (logs of each manager process beside it)\n", *runDir)
	if len(rep.Errors) > 0 {
		os.Exit(1)
	}
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
