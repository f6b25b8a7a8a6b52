package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	wiring "github.com/connectops/finch-operator/internal/operator"
)

// operator is one running manager: a real bin/manager process, or (for
// profiling) operator.NewManager inside the bench process.
type operator interface {
	Name() string
	MetricsURL() string
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
	for _, p := range []*string{&a.metrics, &a.probe, &a.inbound, &a.pprof} {
		var err error
		if *p, err = freePort(); err != nil {
			return a, err
		}
	}
	return a, nil
}

func (a managerAddrs) flags() []string {
	return []string{"--metrics-bind-address=" + a.metrics, "--health-probe-bind-address=" + a.probe, "--inbound-bind-address=" + a.inbound}
}

// launcher starts managers with the given flags on top of cmd/manager's
// defaults: bin/manager processes, or in this process when inProcess is set.
type launcher struct {
	bin, kubeconfig, logDir string
	env                     []string     // added to each process's environment (e.g. GOGC=50)
	inProcess               *rest.Config // admin config for in-process managers
}

// simHostsFlag lets the manager call the bench's simulators, which listen on
// ephemeral loopback ports (cmd/manager calls only api.tryfinch.com unless
// told otherwise). Given before the caller's flags, so theirs win.
const simHostsFlag = "--finch-api-hosts=127.0.0.1:*"

func (l launcher) start(name string, addrs managerAddrs, args []string) (operator, error) {
	// Outside a cluster the operator has no namespace of its own to keep the
	// budget ConfigMaps in; give it one (args may override it).
	args = append(append(addrs.flags(), simHostsFlag, "--cluster-resource-namespace="+operatorNamespace), args...)
	var op operator
	var err error
	if l.inProcess != nil {
		op, err = startInProcManager(l.inProcess, name, addrs, args)
	} else {
		op, err = l.startProc(name, addrs, args)
	}
	if err != nil {
		return nil, err // not a typed nil
	}
	return op, nil
}

// managerBase is what both kinds of manager share.
type managerBase struct {
	name    string
	addrs   managerAddrs
	started time.Time
	done    chan struct{}
}

func (m *managerBase) Name() string          { return m.name }
func (m *managerBase) MetricsURL() string    { return "http://" + m.addrs.metrics + "/metrics" }
func (m *managerBase) Done() <-chan struct{} { return m.done }
func (m *managerBase) Started() time.Time    { return m.started }

// procManager is bin/manager run as a child process.
type procManager struct {
	managerBase
	cmd *exec.Cmd
}

func (l launcher) startProc(name string, addrs managerAddrs, args []string) (*procManager, error) {
	cmd := exec.Command(l.bin, args...)
	cmd.Env = append(append(os.Environ(), l.env...), "KUBECONFIG="+l.kubeconfig)
	f, err := os.OpenFile(filepath.Join(l.logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "\n==== %s start %s %s\n", time.Now().Format(time.RFC3339Nano), l.bin, strings.Join(args, " "))
	cmd.Stdout, cmd.Stderr = f, f
	// The manager dies with the bench, whatever happens to the bench.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	m := &procManager{managerBase: managerBase{name: name, addrs: addrs, started: time.Now(), done: make(chan struct{})}, cmd: cmd}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(m.done)
	}()
	return m, nil
}

func (m *procManager) PID() int { return m.cmd.Process.Pid }

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

// inProcManager is what cmd/manager runs (operator.NewManager, parsed
// from the same flags), inside the bench so that a CPU or heap profile of the
// bench covers the controllers.
type inProcManager struct {
	managerBase
	cancel context.CancelFunc
}

func startInProcManager(cfg *rest.Config, name string, addrs managerAddrs, args []string) (*inProcManager, error) {
	var o wiring.Options
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	o.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := o.Complete(); err != nil {
		return nil, err
	}
	o.Manager.Controller.SkipNameValidation = ptr.To(true) // restarts in one process
	ctx, cancel := context.WithCancel(context.Background())
	mgr, _, err := wiring.NewManager(ctx, cfg, o)
	if err != nil {
		cancel()
		return nil, err
	}
	m := &inProcManager{managerBase: managerBase{name: name, addrs: addrs, started: time.Now(), done: make(chan struct{})}, cancel: cancel}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			logf("%s: %v", name, err)
		}
		close(m.done)
	}()
	return m, nil
}

func (m *inProcManager) PID() int { return 0 }

func (m *inProcManager) Stop(_ syscall.Signal, timeout time.Duration) error {
	m.cancel()
	select {
	case <-m.done:
		return nil
	case <-time.After(timeout):
		return errors.New("in-process manager did not stop")
	}
}
