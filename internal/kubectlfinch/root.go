// Package kubectlfinch is the `kubectl finch` plugin: day-2 commands for
// FinchConnections (get, funnel, status, link, reauth, resync, suspend,
// resume, handoff, adopt). It speaks only to the Kubernetes API, with the
// names the operator understands taken from api/v1alpha1, and never prints an
// access token, an authorization code or a client secret.
package kubectlfinch

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/scheme"
)

// DefaultWaitTimeout bounds --wait: the operator acts within seconds unless
// Finch or the API server is slow or the request is deferred for budget.
const DefaultWaitTimeout = 2 * time.Minute

// Options are what every command shares: the standard kubectl connection
// flags, the streams, and the clock (tests and relative times use it).
type Options struct {
	genericiooptions.IOStreams
	ConfigFlags *genericclioptions.ConfigFlags
	// Now is the clock for relative times ("in 3d", "expired 2h ago").
	Now func() time.Time
	// PollInterval is how often --wait re-reads the objects.
	PollInterval time.Duration

	client client.WithWatch
}

// NewCommand returns the root command; cmd/kubectl-finch executes it.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{
		IOStreams:    streams,
		ConfigFlags:  genericclioptions.NewConfigFlags(true),
		Now:          time.Now,
		PollInterval: 500 * time.Millisecond,
	}
	cmd := &cobra.Command{
		Use:   "kubectl-finch",
		Short: "Day-2 operations for Finch employer connections",
		Long: `kubectl finch shows where each employer is in the Finch Connect journey
(FinchConnection, FinchApp, ClusterFinchApp) and performs the operator's
documented actions (annotations, spec.suspend, code and token Secrets) for you.

The commands that print data take kubectl's -o formats (wide, json, yaml, name,
jsonpath=..., custom-columns=...).

It never prints an access token, an authorization code or a client secret.`,
		Example: `  kubectl finch get -A                       # every connection, next step
  kubectl finch get --watch                  # print each change as it happens
  kubectl finch funnel                       # per app: awaiting, connected...
  kubectl finch status acme                  # the whole story of one employer
  kubectl finch link acme | pbcopy           # the Connect URL for the employer
  kubectl finch reauth acme --wait           # a reauthentication link
  kubectl finch handoff globex --code-file - # embedded flow: hand the code over
  kubectl finch adopt legacy --token-file t  # migration: adopt a token`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl finch"},
		SilenceUsage:  true,
		SilenceErrors: true,
		// Generated references (docs/reference/kubectl-finch) stay stable.
		DisableAutoGenTag: true,
	}
	// completion is ours (kubectl's shape: completion SHELL, documented).
	cmd.CompletionOptions.DisableDefaultCmd = true
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	cmd.SetUsageFunc(usage)
	o.ConfigFlags.AddFlags(cmd.PersistentFlags())
	// Help and the generated reference show no one's home directory.
	if f := cmd.PersistentFlags().Lookup("cache-dir"); f != nil {
		f.DefValue = "$HOME/.kube/cache"
	}
	o.registerGlobalCompletion(cmd)
	cmd.AddCommand(
		newGetCommand(o),
		newFunnelCommand(o),
		newStatusCommand(o),
		newLinkCommand(o),
		newReauthCommand(o),
		newResyncCommand(o),
		newSuspendCommand(o, true),
		newSuspendCommand(o, false),
		newHandoffCommand(o),
		newAdoptCommand(o),
		newVersionCommand(o),
		newCompletionCommand(),
	)
	return cmd
}

// helpWidth is the width help text fits in: an 80-column terminal.
const helpWidth = 80

// FlagUsages is a flag list as help and the reference print it: wrapped to
// helpWidth (the kubeconfig flags' own descriptions are long).
func FlagUsages(flags *pflag.FlagSet) string {
	return strings.TrimRightFunc(flags.FlagUsagesWrapped(helpWidth), unicode.IsSpace)
}

// usage is cobra's usage text, with the flag lists wrapped by FlagUsages.
// It is code, not a cobra template: text/template makes the linker keep
// every method of every type (a third more binary).
func usage(c *cobra.Command) error {
	var b strings.Builder
	b.WriteString("Usage:")
	if c.Runnable() {
		fmt.Fprintf(&b, "\n  %s", c.UseLine())
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(&b, "\n  %s [command]", c.CommandPath())
	}
	if c.HasExample() {
		fmt.Fprintf(&b, "\n\nExamples:\n%s", c.Example)
	}
	if c.HasAvailableSubCommands() {
		b.WriteString("\n\nAvailable Commands:")
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() || sub.Name() == "help" {
				fmt.Fprintf(&b, "\n  %-*s %s", sub.NamePadding(), sub.Name(), sub.Short)
			}
		}
	}
	if c.HasAvailableLocalFlags() {
		fmt.Fprintf(&b, "\n\nFlags:\n%s", FlagUsages(c.LocalFlags()))
	}
	if c.HasAvailableInheritedFlags() {
		fmt.Fprintf(&b, "\n\nGlobal Flags:\n%s", FlagUsages(c.InheritedFlags()))
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(&b, "\n\nUse \"%s [command] --help\" for more information about a command.", c.CommandPath())
	}
	b.WriteString("\n")
	_, err := io.WriteString(c.OutOrStderr(), b.String())
	return err
}

// Client returns the API client (built once from the kubeconfig flags).
func (o *Options) Client() (client.WithWatch, error) {
	if o.client != nil {
		return o.client, nil
	}
	cfg, err := o.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return nil, fmt.Errorf("connect to the API server: %w", err)
	}
	o.client = c
	return c, nil
}

// Namespace is -n, else the kubeconfig context's namespace, else "default".
func (o *Options) Namespace() (string, error) {
	ns, _, err := o.ConfigFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", fmt.Errorf("namespace from kubeconfig: %w", err)
	}
	return ns, nil
}

// clientIn is the client and the namespace a single-object command works in.
func (o *Options) clientIn() (client.Client, string, error) {
	c, err := o.Client()
	if err != nil {
		return nil, "", err
	}
	ns, err := o.Namespace()
	if err != nil {
		return nil, "", err
	}
	return c, ns, nil
}

// getConnection reads one FinchConnection, with an error that says what to
// do when it does not exist.
func (o *Options) getConnection(ctx context.Context, name string) (*finchv1.FinchConnection, error) {
	c, ns, err := o.clientIn()
	if err != nil {
		return nil, err
	}
	conn := &finchv1.FinchConnection{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, conn); err != nil {
		return nil, connectionError(err, ns, name)
	}
	return conn, nil
}

func connectionError(err error, ns, name string) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("FinchConnection %q not found in namespace %q (kubectl finch get -n %s lists them)", name, ns, ns)
	}
	return fmt.Errorf("get FinchConnection %s/%s: %w", ns, name, err)
}

// exactArgs is cobra.ExactArgs with an error that names what is missing.
func exactArgs(what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("expected exactly one %s, got %d arguments", what, len(args))
		}
		return nil
	}
}
