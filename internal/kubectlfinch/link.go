package kubectlfinch

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

func newLinkCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "link NAME",
		Short: "Print the Connect URL to send the employer (pipe-friendly)",
		Long: `Print the published Finch Connect URL (status.session.connectURL) of a
FinchConnection on a line of its own: a first Connect session, or a
reauthentication session. Exits non-zero, printing nothing on stdout, when there
is no live link to send (none issued yet, expired, or already used).

Forward the URL unchanged: its state parameter is how the operator recognises
the employer's browser when Finch redirects it back.`,
		Example: `  kubectl finch link acme
  kubectl finch link acme | mail -s "Connect your payroll" hr@acme.example`,
		Args:              exactArgs("FinchConnection NAME"),
		ValidArgsFunction: o.completeConnections,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLink(cmd.Context(), o, args[0])
		},
	}
}

func runLink(ctx context.Context, o *Options, name string) error {
	conn, err := o.getConnection(ctx, name)
	if err != nil {
		return err
	}
	now := o.Now()
	sess := conn.Status.Session
	switch {
	case (sess == nil || sess.ConnectURL == "") && conn.Status.Phase == finchv1.PhaseConnected:
		return fmt.Errorf("FinchConnection %q is connected: there is no Connect link to send (kubectl finch reauth %s issues a reauthentication link)", name, name)
	case sess == nil || sess.ConnectURL == "":
		return fmt.Errorf("FinchConnection %q has no Connect link to send (phase %s); next step: %s",
			name, orDash(string(conn.Status.Phase)), nextStep(conn, now))
	case !sessionLive(conn, now):
		return fmt.Errorf("the Connect session of %q %s; the operator issues a fresh one (kubectl finch resync %s --wait)",
			name, until(sess.ExpiresAt.Time, now), name)
	}
	_, err = fmt.Fprintln(o.Out, sess.ConnectURL)
	return err
}
