package kubectlfinch

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// completionTimeout bounds the API calls of a completion: a shell waits on it.
const completionTimeout = 5 * time.Second

// shells are the shells `completion` writes a script for.
var shells = []string{"bash", "zsh", "fish", "powershell"}

func newCompletionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "completion SHELL",
		Short: "Print the shell completion script (bash, zsh, fish, powershell)",
		Long: `Print a script that completes kubectl-finch's commands, flags, and the
names of FinchConnections, apps, namespaces and kubeconfig contexts, read from
the cluster as you type.

As a kubectl plugin (kubectl finch ...), kubectl 1.26 or later completes it
through kubectl's own completion: put kubectl_complete-finch (in the release
archive, beside kubectl-finch) on your PATH and load kubectl's completion
(kubectl completion SHELL). Nothing else is needed.

The script printed here completes the kubectl-finch command itself:

  bash:        source <(kubectl-finch completion bash)
               (needs the bash-completion package)
  zsh:         source <(kubectl-finch completion zsh)
               (after compinit)
  fish:        kubectl-finch completion fish | source
  powershell:  kubectl-finch completion powershell | Out-String |
               Invoke-Expression

Add the line to your shell's startup file (~/.bashrc, ~/.zshrc,
~/.config/fish/config.fish, $PROFILE) to keep it.`,
		Example: `  kubectl finch completion bash > ~/.kubectl-finch-completion.bash
  echo 'source ~/.kubectl-finch-completion.bash' >> ~/.bashrc`,
		ValidArgs:             shells,
		Args:                  cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return root.GenPowerShellCompletionWithDesc(out)
			}
		},
	}
}

// completeConnections completes the FinchConnection NAME argument with the
// connections in the namespace (-n, else the kubeconfig's).
func (o *Options) completeConnections(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return o.completeNames(cmd, toComplete, func(ctx context.Context, c client.Client, ns string) ([]string, error) {
		list := &finchv1.FinchConnectionList{}
		if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
			return nil, err
		}
		names := make([]string, 0, len(list.Items))
		for _, conn := range list.Items {
			names = append(names, conn.Name)
		}
		return names, nil
	})
}

// registerAppCompletion completes --app with the FinchApps in the namespace
// and the ClusterFinchApps (as ClusterFinchApp/NAME).
func (o *Options) registerAppCompletion(cmd *cobra.Command) {
	_ = cmd.RegisterFlagCompletionFunc("app", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return o.completeNames(cmd, toComplete, func(ctx context.Context, c client.Client, ns string) ([]string, error) {
			apps := &finchv1.FinchAppList{}
			if err := c.List(ctx, apps, client.InNamespace(ns)); err != nil {
				return nil, err
			}
			var names []string
			for _, a := range apps.Items {
				names = append(names, a.Name)
			}
			// Reading ClusterFinchApps takes a ClusterRoleBinding few have.
			cluster := &finchv1.ClusterFinchAppList{}
			if err := c.List(ctx, cluster); err == nil {
				for _, a := range cluster.Items {
					names = append(names, appLabel(finchv1.ClusterFinchAppKind, a.Name))
				}
			}
			return names, nil
		})
	})
}

// registerGlobalCompletion completes -n with the namespaces, and --context,
// --cluster and --user with the kubeconfig's, as kubectl does.
func (o *Options) registerGlobalCompletion(root *cobra.Command) {
	_ = root.RegisterFlagCompletionFunc("namespace", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return o.completeNames(cmd, toComplete, func(ctx context.Context, c client.Client, _ string) ([]string, error) {
			list := &metav1.PartialObjectMetadataList{}
			list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
			if err := c.List(ctx, list); err != nil {
				return nil, err
			}
			names := make([]string, 0, len(list.Items))
			for _, ns := range list.Items {
				names = append(names, ns.Name)
			}
			return names, nil
		})
	})
	kubeconfig := func(names func() []string) cobra.CompletionFunc {
		return func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return withPrefix(names(), toComplete), cobra.ShellCompDirectiveNoFileComp
		}
	}
	_ = root.RegisterFlagCompletionFunc("context", kubeconfig(func() []string {
		cfg, err := o.ConfigFlags.ToRawKubeConfigLoader().RawConfig()
		if err != nil {
			return nil
		}
		return keys(cfg.Contexts)
	}))
	_ = root.RegisterFlagCompletionFunc("cluster", kubeconfig(func() []string {
		cfg, err := o.ConfigFlags.ToRawKubeConfigLoader().RawConfig()
		if err != nil {
			return nil
		}
		return keys(cfg.Clusters)
	}))
	_ = root.RegisterFlagCompletionFunc("user", kubeconfig(func() []string {
		cfg, err := o.ConfigFlags.ToRawKubeConfigLoader().RawConfig()
		if err != nil {
			return nil
		}
		return keys(cfg.AuthInfos)
	}))
}

// completeNames runs list against the cluster and returns the names that
// start with toComplete. A completion that cannot reach the cluster offers
// nothing (and no file names) rather than failing the shell.
func (o *Options) completeNames(cmd *cobra.Command, toComplete string, list func(context.Context, client.Client, string) ([]string, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	c, ns, err := o.clientIn()
	if err != nil {
		cobra.CompDebugln(fmt.Sprintf("completion: %v", err), true)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names, err := list(ctx, c, ns)
	if err != nil {
		cobra.CompDebugln(fmt.Sprintf("completion: %v", err), true)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return withPrefix(names, toComplete), cobra.ShellCompDirectiveNoFileComp
}

func withPrefix(names []string, prefix string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
