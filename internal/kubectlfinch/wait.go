package kubectlfinch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/wait"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// waitFlags are --wait and --timeout of the commands that ask the operator to act.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

func (w *waitFlags) add(cmd *cobra.Command, what string) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, "wait until the operator has "+what+", then print the result")
	cmd.Flags().DurationVar(&w.timeout, "timeout", DefaultWaitTimeout, "how long --wait waits")
}

// errTimeout marks a --wait that ran out of time.
var errTimeout = errors.New("timed out")

// poll calls done every PollInterval until it reports true, fails, or the
// timeout passes. Polling (not a watch) keeps the RBAC a user needs to get.
func (o *Options) poll(ctx context.Context, timeout time.Duration, done func(context.Context) (bool, error)) error {
	err := wait.PollUntilContextTimeout(ctx, o.PollInterval, timeout, true, done)
	if wait.Interrupted(err) {
		return errTimeout
	}
	return err
}

// waitConnection polls one FinchConnection until done says so.
func (o *Options) waitConnection(ctx context.Context, name string, timeout time.Duration, done func(*finchv1.FinchConnection) (bool, error)) (*finchv1.FinchConnection, error) {
	var last *finchv1.FinchConnection
	err := o.poll(ctx, timeout, func(ctx context.Context) (bool, error) {
		conn, err := o.getConnection(ctx, name)
		if err != nil {
			return false, err
		}
		last = conn
		return done(conn)
	})
	if errors.Is(err, errTimeout) && last != nil {
		return last, timeoutError(last, timeout, o.Now())
	}
	return last, err
}

// timeoutError says what the connection shows now, so a timed-out --wait
// still tells the user where things stand.
func timeoutError(conn *finchv1.FinchConnection, timeout time.Duration, now time.Time) error {
	msg := ""
	if ready := condition(conn, finchv1.ConditionReady); ready != nil {
		msg = fmt.Sprintf("; Ready=%s %s: %s", ready.Status, ready.Reason, ready.Message)
	}
	return fmt.Errorf("%w after %s waiting for the operator to act on %q (phase %s%s); next step: %s",
		errTimeout, timeout, conn.Name, orDash(string(conn.Status.Phase)), msg, nextStep(conn, now))
}

// result prints where a connection stands after the operator acted.
func (o *Options) result(conn *finchv1.FinchConnection) {
	now := o.Now()
	st := &conn.Status
	fmt.Fprintf(o.Out, "%s: phase %s", conn.Name, orDash(string(st.Phase)))
	if st.ConnectionID != "" {
		fmt.Fprintf(o.Out, ", connection %s", st.ConnectionID)
	}
	fmt.Fprintln(o.Out)
	if ready := condition(conn, finchv1.ConditionReady); ready != nil && ready.Message != "" {
		fmt.Fprintf(o.Out, "  %s: %s\n", ready.Reason, ready.Message)
	}
	fmt.Fprintf(o.Out, "  next step: %s\n", nextStep(conn, now))
}
