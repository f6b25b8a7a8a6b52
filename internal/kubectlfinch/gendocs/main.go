// Command gendocs writes the kubectl finch reference
// (docs/reference/kubectl-finch) from the plugin's command tree:
// `make docs-kubectl-finch` runs it.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/connectops/finch-operator/internal/kubectlfinch"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gendocs DIR")
		os.Exit(2)
	}
	root := kubectlfinch.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: os.Stderr})
	if err := kubectlfinch.WriteReference(root, os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}
