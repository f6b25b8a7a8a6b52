// Command demo is the small helper behind hack/demo.sh (`make demo`). It does the few things
// that are awkward in bash with only Go, kubectl, curl and coreutils on the machine:
//
//	demo controlplane --assets DIR --dir DIR --kubeconfig FILE
//	    Starts etcd and kube-apiserver from DIR (bin/k8s/<version>-<os>-<arch>, built by
//	    `make envtest`) through controller-runtime's envtest, on free loopback ports, with etcd
//	    data and the API server's generated certificates under --dir. Writes an admin
//	    (system:masters, client-certificate) kubeconfig to --kubeconfig, then stays in the
//	    foreground until SIGINT/SIGTERM (or until its parent dies) and stops both processes.
//	demo exec CMD [ARGS...]
//	    Replaces itself with CMD (same pid) after asking the kernel to SIGTERM it when demo.sh
//	    dies, so even a `kill -9` of the demo leaves no manager or simulator behind.
//	demo ports N
//	    Prints N distinct free TCP ports on 127.0.0.1, one per line.
//	demo json KEY[.KEY...]
//	    Reads a JSON object on stdin and prints the value at the dotted path (strings unquoted).
//	demo simstate URL
//	    Prints the Finch simulator's GET URL/_sim/state as two tables (connections, sessions).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "controlplane":
		err = controlPlane(args)
	case "exec":
		err = execGuarded(args)
	case "ports":
		err = ports(args)
	case "json":
		err = jsonGet(args)
	case "simstate":
		err = simState(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: demo controlplane --assets DIR --dir DIR --kubeconfig FILE | exec CMD [ARGS] | ports N | json PATH | simstate URL")
	os.Exit(2)
}

func controlPlane(args []string) error {
	var assets, dir, kubeconfig string
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "--assets":
			assets = args[i+1]
		case "--dir":
			dir = args[i+1]
		case "--kubeconfig":
			kubeconfig = args[i+1]
		default:
			return fmt.Errorf("unknown flag %s", args[i])
		}
	}
	if assets == "" || dir == "" || kubeconfig == "" {
		return fmt.Errorf("--assets, --dir and --kubeconfig are required")
	}
	// If demo.sh is killed outright (no trap runs), take the control plane down with it
	// rather than leaving etcd and kube-apiserver orphaned.
	dieWithParent()

	// Signals may arrive while the control plane is still starting; stop cleanly either way.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)

	etcdData := filepath.Join(dir, "etcd")
	certDir := filepath.Join(dir, "apiserver")
	for _, d := range []string{etcdData, certDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	logFile, err := os.Create(filepath.Join(dir, "controlplane.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()

	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		// The API server only picks free ports and a self-signed serving cert; everything else
		// (service account keys, client-cert admin user, RBAC) is envtest's tested default.
		ControlPlane: envtest.ControlPlane{
			Etcd:      &envtest.Etcd{DataDir: etcdData, Out: logFile, Err: logFile},
			APIServer: &envtest.APIServer{CertDir: certDir, Out: logFile, Err: logFile},
		},
		ControlPlaneStartTimeout: 90 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	started := make(chan error, 1)
	go func() {
		_, err := env.Start()
		started <- err
	}()
	select {
	case err := <-started:
		if err != nil {
			_ = env.Stop()
			return fmt.Errorf("starting etcd and kube-apiserver from %s: %w (see %s)", assets, err, logFile.Name())
		}
	case sig := <-sigc:
		fmt.Fprintf(os.Stderr, "demo controlplane: %v while starting; stopping\n", sig)
		if err := <-started; err == nil {
			_ = env.Stop()
		}
		return nil
	}

	tmp := kubeconfig + ".tmp"
	if err := os.WriteFile(tmp, env.KubeConfig, 0o600); err != nil {
		_ = env.Stop()
		return err
	}
	// Rename so demo.sh never reads a half-written kubeconfig.
	if err := os.Rename(tmp, kubeconfig); err != nil {
		_ = env.Stop()
		return err
	}
	fmt.Printf("control plane up: %s (etcd %s)\n", env.Config.Host, env.ControlPlane.Etcd.URL.String())

	sig := <-sigc
	fmt.Printf("control plane: %v, stopping\n", sig)
	return env.Stop()
}

func execGuarded(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("want a command")
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		return err
	}
	dieWithParent() // the parent-death signal survives execve
	return syscall.Exec(path, args, os.Environ())
}

func ports(args []string) error {
	n := 1
	if len(args) > 0 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 1 {
			return fmt.Errorf("N must be a positive number") //nolint:staticcheck // ST1005: N is the argument's name in the usage text
		}
		n = v
	}
	// Hold every listener until all are chosen so the ports are distinct.
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ls = append(ls, l)
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

func jsonGet(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want one dotted path")
	}
	var v any
	if err := json.NewDecoder(os.Stdin).Decode(&v); err != nil {
		return fmt.Errorf("stdin is not JSON: %w", err)
	}
	for _, k := range strings.Split(args[0], ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: not an object", k)
		}
		if v, ok = m[k]; !ok {
			return fmt.Errorf("no key %q", k)
		}
	}
	switch x := v.(type) {
	case string:
		fmt.Println(x)
	default:
		b, _ := json.Marshal(x)
		fmt.Println(string(b))
	}
	return nil
}

func simState(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want the simulator base URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(args[0], "/")+"/_sim/state", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /_sim/state: %s: %s", resp.Status, body)
	}
	var st struct {
		Sessions []struct {
			ID           string `json:"id"`
			CustomerID   string `json:"customer_id"`
			Kind         string `json:"kind"`
			ConnectionID string `json:"connection_id"`
			Completed    bool   `json:"completed"`
			Refreshes    int    `json:"refreshes"`
		} `json:"sessions"`
		Connections []struct {
			ID           string `json:"id"`
			CustomerID   string `json:"customer_id"`
			ProviderID   string `json:"provider_id"`
			Status       string `json:"status"`
			Tokens       int    `json:"tokens"`
			Disconnected bool   `json:"disconnected"`
		} `json:"connections"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("GET /_sim/state: %w", err)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CONNECTION\tCUSTOMER\tPROVIDER\tSTATUS\tLIVE TOKENS\tDISCONNECTED")
	for _, c := range st.Connections {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%t\n", c.ID, c.CustomerID, c.ProviderID, c.Status, c.Tokens, c.Disconnected)
	}
	// A blank line ends the first table, so each gets its own column widths.
	fmt.Fprintln(w)
	fmt.Fprintln(w, "SESSION\tCUSTOMER\tKIND\tCOMPLETED\tREFRESHES\tCONNECTION")
	for _, s := range st.Sessions {
		fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%d\t%s\n", s.ID, s.CustomerID, s.Kind, s.Completed, s.Refreshes, s.ConnectionID)
	}
	return w.Flush()
}
