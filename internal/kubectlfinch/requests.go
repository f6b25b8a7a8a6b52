package kubectlfinch

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// requestValue is a fresh value for a request annotation: the operator acts
// when the value changes and echoes it in status once handled.
func (o *Options) requestValue() string { return o.Now().UTC().Format(time.RFC3339Nano) }

// annotate sets one annotation by merge patch (no read-modify-write race with
// the operator or a GitOps tool).
func (o *Options) annotate(ctx context.Context, conn *finchv1.FinchConnection, key, value string) error {
	c, err := o.Client()
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{key: value}}})
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, conn, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		return fmt.Errorf("annotate FinchConnection %s: %w", conn.Name, err)
	}
	return nil
}

// --- reauth ----------------------------------------------------------------

func newReauthCommand(o *Options) *cobra.Command {
	var wf waitFlags
	cmd := &cobra.Command{
		Use:   "reauth NAME",
		Short: "Ask the operator for a reauthentication session and its link",
		Long: `Ask the operator to mint a Finch reauthentication session for a connected
employer: it sets the annotation
` + finchv1.ReauthRequestedAtAnnotation + `
to a new value (what a GitOps repository can do too). The operator calls
POST /connect/sessions/reauthenticate once and publishes the new link; the
connection ID stays the same. With --wait, print the link once it is published.`,
		Example: `  kubectl finch reauth acme --wait
  kubectl finch reauth acme && kubectl finch link acme`,
		Args:              exactArgs("FinchConnection NAME"),
		ValidArgsFunction: o.completeConnections,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRequest(cmd.Context(), o, args[0], finchv1.ReauthRequestedAtAnnotation, wf,
				func(c *finchv1.FinchConnection) string { return c.Status.LastHandledReauthAt }, "reauthentication")
		},
	}
	wf.add(cmd, "published the reauthentication session")
	return cmd
}

// --- resync ----------------------------------------------------------------

type resyncOptions struct {
	*Options
	waitFlags
	all, allNamespaces bool
	app                appFilter
	selector           string
}

func newResyncCommand(o *Options) *cobra.Command {
	r := &resyncOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "resync NAME | --all",
		Short: "Ask the operator to re-check now (the requestedAt annotation)",
		Long: `Ask the operator to reconcile now: it sets the annotation
` + finchv1.RequestedAtAnnotation + `
to a new value. A connected connection is introspected at Finch; one awaiting
the employer gets its session refreshed if it changed or expired. The value is
echoed in status.lastHandledReconcileAt once handled, which --wait waits for.

--all resyncs every connection in the namespace (-A: in every namespace; --app:
of one FinchApp, or of a ClusterFinchApp as --app ClusterFinchApp/NAME; -l: with
these labels). Each costs at most one Finch call, within the app's budget.`,
		Example: `  kubectl finch resync acme --wait
  kubectl finch resync --all --app default`,
		ValidArgsFunction: o.completeConnections,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case r.all && len(args) > 0:
				return fmt.Errorf("give a NAME or --all, not both")
			case r.all:
				return r.runAll(cmd.Context())
			case len(args) != 1:
				return fmt.Errorf("expected exactly one FinchConnection NAME, or --all")
			case r.allNamespaces || r.app.isSet() || r.selector != "":
				return fmt.Errorf("-A, --app and -l go with --all")
			}
			return runRequest(cmd.Context(), o, args[0], finchv1.RequestedAtAnnotation, r.waitFlags,
				func(c *finchv1.FinchConnection) string { return c.Status.LastHandledReconcileAt }, "resync")
		},
	}
	cmd.Flags().BoolVar(&r.all, "all", false, "every connection in the namespace (see -A and --app)")
	cmd.Flags().BoolVarP(&r.allNamespaces, "all-namespaces", "A", false, "with --all: in every namespace")
	cmd.Flags().Var(&r.app, "app", "with --all: only connections of this app: "+appFlagUsage)
	cmd.Flags().StringVarP(&r.selector, "selector", "l", "",
		"with --all: only connections with these labels")
	r.waitFlags.add(cmd, "handled the request")
	o.registerAppCompletion(cmd)
	return cmd
}

// runRequest sets a request annotation and, with --wait, waits for its echo.
func runRequest(ctx context.Context, o *Options, name, annotation string, wf waitFlags, handled func(*finchv1.FinchConnection) string, what string) error {
	conn, err := o.getConnection(ctx, name)
	if err != nil {
		return err
	}
	value := o.requestValue()
	if err := o.annotate(ctx, conn, annotation, value); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "%s requested for %s (%s=%s)\n", what, name, annotation, value)
	if conn.Spec.Suspend {
		fmt.Fprintf(o.ErrOut, "warning: %s is suspended; the operator acts on the request after `kubectl finch resume %s`\n", name, name)
		if wf.wait {
			return fmt.Errorf("not waiting: %s is suspended", name)
		}
		return nil
	}
	if !wf.wait {
		return nil
	}
	conn, err = o.waitConnection(ctx, name, wf.timeout, func(c *finchv1.FinchConnection) (bool, error) {
		return handled(c) == value && !callInFlight(c), nil
	})
	if err != nil {
		return err
	}
	if annotation == finchv1.ReauthRequestedAtAnnotation {
		return o.printReauthResult(conn)
	}
	o.result(conn)
	return nil
}

// callInFlight says the operator has announced a Finch call (status.pendingCall)
// whose result it has not recorded yet: the pass that handled the request is
// still going. A call whose result is lost (Ready reason
// ReauthSessionUnrecorded) is not waited for: the status says what to do.
func callInFlight(c *finchv1.FinchConnection) bool {
	if c.Status.PendingCall == nil {
		return false
	}
	ready := meta.FindStatusCondition(c.Status.Conditions, finchv1.ConditionReady)
	return ready == nil || ready.Reason != finchv1.ReasonReauthUnrecorded
}

func (o *Options) printReauthResult(conn *finchv1.FinchConnection) error {
	sess := conn.Status.Session
	if sess != nil && sess.Kind == finchv1.SessionReauthenticate && sessionLive(conn, o.Now()) {
		fmt.Fprintf(o.Out, "reauthentication session %s published for %s (connection %s), expires %s; send the employer:\n%s\n",
			sess.ID, conn.Name, orDash(conn.Status.ConnectionID), until(sess.ExpiresAt.Time, o.Now()), sess.ConnectURL)
		return nil
	}
	o.result(conn)
	return fmt.Errorf("the operator handled the request but published no reauthentication session for %s", conn.Name)
}

func (r *resyncOptions) runAll(ctx context.Context) error {
	sel, err := parseSelector(r.selector)
	if err != nil {
		return err
	}
	conns, _, err := listConnections(ctx, r.Options, r.allNamespaces, &r.app, sel)
	if err != nil {
		return err
	}
	if len(conns) == 0 {
		_, err := fmt.Fprintln(r.ErrOut, "No FinchConnections found to resync.")
		return err
	}
	c, err := r.Client()
	if err != nil {
		return err
	}
	value := r.requestValue()
	pending := map[client.ObjectKey]bool{}
	for i := range conns {
		conn := &conns[i]
		if err := r.annotate(ctx, conn, finchv1.RequestedAtAnnotation, value); err != nil {
			return err
		}
		if conn.Spec.Suspend {
			fmt.Fprintf(r.ErrOut, "warning: %s/%s is suspended; it resyncs once resumed\n", conn.Namespace, conn.Name)
			continue
		}
		pending[client.ObjectKeyFromObject(conn)] = true
	}
	fmt.Fprintf(r.Out, "resync requested for %d FinchConnections (%s=%s)\n", len(conns), finchv1.RequestedAtAnnotation, value)
	if !r.wait {
		return nil
	}
	err = r.poll(ctx, r.timeout, func(ctx context.Context) (bool, error) {
		for key := range pending {
			conn := &finchv1.FinchConnection{}
			if err := c.Get(ctx, key, conn); err != nil {
				return false, connectionError(err, key.Namespace, key.Name)
			}
			if conn.Status.LastHandledReconcileAt == value {
				delete(pending, key)
			}
		}
		return len(pending) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %d of %d FinchConnections not handled yet", err, len(pending), len(conns))
	}
	if conns, _, err = listConnections(ctx, r.Options, r.allNamespaces, &r.app, sel); err != nil {
		return err
	}
	g := &getOptions{Options: r.Options, allNamespaces: r.allNamespaces, out: newOutputFlags()}
	return g.newTable().print(conns)
}

// --- suspend / resume ------------------------------------------------------

func newSuspendCommand(o *Options, suspend bool) *cobra.Command {
	var wf waitFlags
	use, short, long := "suspend NAME", "Stop every Finch call for a connection (spec.suspend: true)",
		`Set spec.suspend to true: the operator makes no Finch calls for the connection
(no session refresh, no introspection, no reauthentication) until it is resumed.
Request annotations set meanwhile are handled after resume.`
	if !suspend {
		use, short, long = "resume NAME", "Resume a suspended connection (spec.suspend: false)",
			`Set spec.suspend to false: the operator reconciles the connection again,
including any request annotations set while it was suspended.`
	}
	cmd := &cobra.Command{
		Use:               use,
		Short:             short,
		Long:              long + "\n\nIn a GitOps repository, set spec.suspend there instead: the next sync\nwould revert this.",
		Example:           "  kubectl finch " + use[:len(use)-len(" NAME")] + " acme --wait",
		Args:              exactArgs("FinchConnection NAME"),
		ValidArgsFunction: o.completeConnections,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSuspend(cmd.Context(), o, args[0], suspend, wf)
		},
	}
	wf.add(cmd, "observed the change")
	return cmd
}

func runSuspend(ctx context.Context, o *Options, name string, suspend bool, wf waitFlags) error {
	verb := "suspended"
	if !suspend {
		verb = "resumed"
	}
	conn, err := o.getConnection(ctx, name)
	if err != nil {
		return err
	}
	if conn.Spec.Suspend == suspend {
		if suspend {
			fmt.Fprintf(o.Out, "%s is already suspended\n", name)
		} else {
			fmt.Fprintf(o.Out, "%s is not suspended\n", name)
		}
		return nil
	}
	c, err := o.Client()
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"suspend": suspend}})
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, conn, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		return fmt.Errorf("patch spec.suspend of %s: %w", name, err)
	}
	fmt.Fprintf(o.Out, "%s %s\n", name, verb)
	if !wf.wait {
		return nil
	}
	gen := conn.Generation
	conn, err = o.waitConnection(ctx, name, wf.timeout, func(c *finchv1.FinchConnection) (bool, error) {
		if c.Status.ObservedGeneration < gen {
			return false, nil
		}
		rec := condition(c, finchv1.ConditionReconciling)
		isSuspended := rec != nil && rec.Reason == finchv1.ReasonSuspended
		return isSuspended == suspend, nil
	})
	if err != nil {
		return err
	}
	o.result(conn)
	return nil
}
