package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/connectops/finch-operator/controllers"
	"github.com/connectops/finch-operator/internal/inbound"
	"github.com/connectops/finch-operator/internal/scheme"
)

// operator is one running manager: a real bin/manager process, or (for
// profiling) the same wiring inside the bench process.
type operator interface {
	Name() string
	MetricsURL() string
	InboundAddr() string
	// PID is the OS process (0 when in-process).
	PID() int
	// Stop sends sig (SIGTERM: graceful; SIGKILL: crash) and waits for the exit.
	Stop(sig syscall.Signal, timeout time.Duration) error
	Done() <-chan struct{}
	Started() time.Time
}

// managerAddrs are the listen addresses of one replica (kept across restarts
// so the simulator's webhook URL stays valid).
type managerAddrs struct {
	metrics, probe, inbound, pprof string
}

func newAddrs() (managerAddrs, error) {
	var a managerAddrs
	var err error
	if a.metrics, err = freePort(); err != nil {
		return a, err
	}
	if a.probe, err = freePort(); err != nil {
		return a, err
	}
	if a.inbound, err = freePort(); err != nil {
		return a, err
	}
	a.pprof, err = freePort()
	return a, err
}

// managerEnv is added to the environment of every manager process (e.g. GOGC=50).
var managerEnv []string

// procManager is bin/manager run as a child process.
type procManager struct {
	name    string
	addrs   managerAddrs
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	err     error
}

func startProcManager(bin, kubeconfig, logDir, name string, addrs managerAddrs, args []string) (*procManager, error) {
	all := append([]string{
		"--metrics-bind-address=" + addrs.metrics,
		"--health-probe-bind-address=" + addrs.probe,
		"--inbound-bind-address=" + addrs.inbound,
	}, args...)
	cmd := exec.Command(bin, all...)
	cmd.Env = append(append(os.Environ(), managerEnv...), "KUBECONFIG="+kubeconfig)
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "\n==== %s start %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(all, " "))
	cmd.Stdout, cmd.Stderr = f, f
	// The manager dies with the bench, whatever happens to the bench.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	m := &procManager{name: name, addrs: addrs, cmd: cmd, done: make(chan struct{})}
	m.started = time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	go func() {
		m.err = cmd.Wait()
		f.Close()
		close(m.done)
	}()
	return m, nil
}

func (m *procManager) Name() string          { return m.name }
func (m *procManager) MetricsURL() string    { return "http://" + m.addrs.metrics + "/metrics" }
func (m *procManager) InboundAddr() string   { return m.addrs.inbound }
func (m *procManager) PID() int              { return m.cmd.Process.Pid }
func (m *procManager) Done() <-chan struct{} { return m.done }
func (m *procManager) Started() time.Time    { return m.started }
func (m *procManager) ExitErr() error        { <-m.done; return m.err }
func (m *procManager) Stop(sig syscall.Signal, timeout time.Duration) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.done:
		return nil
	case <-time.After(timeout):
		_ = m.cmd.Process.Kill()
		<-m.done
		return fmt.Errorf("%s did not exit %s after %v; killed", m.name, timeout, sig)
	}
}

// inProcManager runs the manager's wiring (cmd/manager) inside the bench, so
// that a CPU or heap profile of the bench covers the controllers.
type inProcManager struct {
	name    string
	addrs   managerAddrs
	cancel  context.CancelFunc
	started time.Time
	done    chan struct{}
	err     error
}

// inProcOptions are the production defaults of cmd/manager, overridable the
// same way (flags parsed from the manager args).
type inProcOptions struct {
	workers int
	qps     float64
	burst   int
}

func parseManagerArgs(args []string) inProcOptions {
	o := inProcOptions{workers: 10, qps: 50, burst: 100}
	for _, a := range args {
		k, v, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !ok {
			continue
		}
		switch k {
		case "max-concurrent-reconciles":
			o.workers, _ = strconv.Atoi(v)
		case "kube-api-qps":
			o.qps, _ = strconv.ParseFloat(v, 64)
		case "kube-api-burst":
			o.burst, _ = strconv.Atoi(v)
		}
	}
	return o
}

func startInProcManager(adminCfg *rest.Config, name string, addrs managerAddrs, args []string) (*inProcManager, error) {
	o := parseManagerArgs(args)
	cfg := rest.CopyConfig(adminCfg)
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme.Scheme,
		Cache:                  controllers.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: addrs.metrics},
		HealthProbeBindAddress: addrs.probe,
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)}, // restarts in one process
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	op, err := controllers.Setup(ctx, mgr, controllers.Options{MaxConcurrentReconciles: o.workers})
	if err != nil {
		cancel()
		return nil, err
	}
	srv := inbound.New(inbound.Config{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Apps: op.Apps,
		Recorder: mgr.GetEventRecorder("finch-operator"),
	})
	if err := mgr.Add(srv.Runnable(addrs.inbound)); err != nil {
		cancel()
		return nil, err
	}
	_ = mgr.AddHealthzCheck("healthz", healthz.Ping)
	m := &inProcManager{name: name, addrs: addrs, cancel: cancel, started: time.Now(), done: make(chan struct{})}
	go func() {
		m.err = mgr.Start(ctx)
		close(m.done)
	}()
	return m, nil
}

func (m *inProcManager) Name() string          { return m.name }
func (m *inProcManager) MetricsURL() string    { return "http://" + m.addrs.metrics + "/metrics" }
func (m *inProcManager) InboundAddr() string   { return m.addrs.inbound }
func (m *inProcManager) PID() int              { return 0 }
func (m *inProcManager) Done() <-chan struct{} { return m.done }
func (m *inProcManager) Started() time.Time    { return m.started }
func (m *inProcManager) Stop(_ syscall.Signal, timeout time.Duration) error {
	m.cancel()
	select {
	case <-m.done:
		return nil
	case <-time.After(timeout):
		return errors.New("in-process manager did not stop")
	}
}

// procStatus reads VmRSS and VmHWM (bytes) of a process.
func procStatus(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = v * 1024
		case "VmHWM:":
			hwm = v * 1024
		}
	}
	return rss, hwm, sc.Err()
}

// procCPU is the user+system CPU time of a process.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	// Fields after the parenthesised command name.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bad stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// waitMetrics waits until the operator's metrics endpoint answers with the
// FinchConnection controller's metrics.
func waitMetrics(ctx context.Context, op operator, timeout time.Duration) (metricSet, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-op.Done():
			return nil, fmt.Errorf("%s exited while starting (see its log)", op.Name())
		default:
		}
		m, err := scrape(ctx, op.MetricsURL())
		if err == nil && m.has("controller_runtime_max_concurrent_reconciles", "controller", "finchconnection") {
			return m, nil
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("%s metrics not up after %v: %v", op.Name(), timeout, lastErr)
}

// waitUp waits until the operator's metrics endpoint answers (a standby
// replica has no controller metrics until it leads).
func waitUp(ctx context.Context, op operator, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := scrape(ctx, op.MetricsURL()); err == nil {
			return nil
		}
		select {
		case <-op.Done():
			return fmt.Errorf("%s exited while starting (see its log)", op.Name())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s metrics endpoint not up after %v", op.Name(), timeout)
}

// probeOK reports whether an HTTP GET answers 200.
func probeOK(url string) bool {
	resp, err := scrapeClient.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
