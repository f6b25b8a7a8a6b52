package kubectlfinch

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/connectops/finch-operator/internal/version"
)

// operatorSelector finds the operator's Deployment, as installed by the chart
// and by install.yaml (both set app.kubernetes.io/name=finch-operator).
const operatorSelector = "app.kubernetes.io/name=finch-operator"

type operatorVersion struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Version   string `json:"version"`
}

type versionOutput struct {
	Client    version.Info      `json:"clientVersion"`
	Operators []operatorVersion `json:"operatorVersions,omitempty"`
	// Error says why the operator's version could not be read (no cluster,
	// no permission to list Deployments); the client's version still prints.
	Error string `json:"operatorError,omitempty"`

	clientOnly bool
}

func newVersionCommand(o *Options) *cobra.Command {
	var clientOnly bool
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version and the running operator's",
		Long: `Print the version of kubectl finch and, unless --client is given, of each
finch-operator Deployment it can read
(label ` + operatorSelector + `).
A warning goes to stderr when they differ.`,
		Example: `  kubectl finch version
  kubectl finch version --client -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := versionOutput{Client: version.Get(), clientOnly: clientOnly}
			if !clientOnly {
				ops, err := o.operatorVersions(cmd.Context())
				if err != nil {
					out.Error = err.Error()
				}
				out.Operators = ops
			}
			if err := o.printVersion(out, output); err != nil {
				return err
			}
			for _, op := range out.Operators {
				if op.Version != out.Client.Version {
					fmt.Fprintf(o.ErrOut, "WARNING: kubectl finch %s differs from the operator %s/%s %s; use the plugin of the operator's release\n",
						out.Client.Version, op.Namespace, op.Name, op.Version)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "Print only the plugin's version (no cluster access)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "Output format: json or yaml")
	return cmd
}

func (o *Options) printVersion(out versionOutput, format string) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		fmt.Fprintln(o.Out, string(b))
	case "yaml":
		b, err := yaml.Marshal(out)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		fmt.Fprint(o.Out, string(b))
	case "":
		fmt.Fprintf(o.Out, "Client Version: %s\n", out.Client)
		for _, op := range out.Operators {
			fmt.Fprintf(o.Out, "Operator Version: %s (deployment %s/%s)\n", op.Version, op.Namespace, op.Name)
		}
		if out.Error != "" {
			fmt.Fprintf(o.Out, "Operator Version: unknown (%s)\n", out.Error)
		} else if len(out.Operators) == 0 && !out.clientOnly {
			fmt.Fprintf(o.Out, "Operator Version: not found (no Deployment labelled %s)\n", operatorSelector)
		}
	default:
		return fmt.Errorf("unknown output format %q: use json or yaml", format)
	}
	return nil
}

// operatorVersions reads the operator Deployments' versions: the
// app.kubernetes.io/version label the chart and install.yaml set, else the
// manager image's tag.
func (o *Options) operatorVersions(ctx context.Context) ([]operatorVersion, error) {
	c, err := o.Client()
	if err != nil {
		return nil, err
	}
	sel, err := labels.Parse(operatorSelector)
	if err != nil {
		return nil, fmt.Errorf("selector: %w", err)
	}
	var list appsv1.DeploymentList
	if err := c.List(ctx, &list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("list operator Deployments: %w", err)
	}
	var out []operatorVersion
	for _, d := range list.Items {
		v := d.Labels["app.kubernetes.io/version"]
		if v == "" {
			v = imageTag(d.Spec.Template.Spec.Containers)
		}
		out = append(out, operatorVersion{Namespace: d.Namespace, Name: d.Name, Version: v})
	}
	return out, nil
}

// imageTag is the tag of the manager container's image ("" when pinned by
// digest only).
func imageTag(cs []corev1.Container) string {
	for _, c := range cs {
		if c.Name != "manager" && len(cs) > 1 {
			continue
		}
		ref := c.Image
		if i := strings.Index(ref, "@"); i >= 0 {
			ref = ref[:i]
		}
		if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
			return ref[i+1:]
		}
	}
	return "unknown"
}
