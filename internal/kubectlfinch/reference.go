package kubectlfinch

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// WriteReference writes one Markdown page per command of root into dir
// (docs/reference/kubectl-finch), replacing the pages there: what --help
// prints, with the flag lists wrapped as --help wraps them. `make
// docs-kubectl-finch` runs it; hack/verify.sh fails when the pages drift.
func WriteReference(root *cobra.Command, dir string) error {
	old, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return fmt.Errorf("remove stale page: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writePages(root, dir)
}

func writePages(c *cobra.Command, dir string) error {
	if err := os.WriteFile(filepath.Join(dir, pageName(c)), referencePage(c), 0o644); err != nil {
		return fmt.Errorf("write the page of %s: %w", c.CommandPath(), err)
	}
	for _, sub := range documented(c) {
		if err := writePages(sub, dir); err != nil {
			return err
		}
	}
	return nil
}

// documented are c's subcommands with a page (not help, not hidden).
func documented(c *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() && !sub.IsAdditionalHelpTopicCommand() {
			out = append(out, sub)
		}
	}
	return out
}

func pageName(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "_") + ".md"
}

// referencePage is c's page, in the layout of cobra's doc generator.
func referencePage(c *cobra.Command) []byte {
	var b bytes.Buffer
	block := func(text string) {
		fmt.Fprintf(&b, "```\n%s\n```\n\n", strings.TrimRight(text, "\n "))
	}
	fmt.Fprintf(&b, "## %s\n\n%s\n\n", c.CommandPath(), c.Short)
	if c.Long != "" {
		b.WriteString("### Synopsis\n\n")
		block(c.Long)
	}
	if c.Runnable() {
		block(c.UseLine())
	}
	if c.Example != "" {
		b.WriteString("### Examples\n\n")
		block(c.Example)
	}
	if c.HasAvailableLocalFlags() {
		b.WriteString("### Options\n\n")
		block(FlagUsages(c.LocalFlags()))
	}
	if c.HasAvailableInheritedFlags() {
		b.WriteString("### Options inherited from parent commands\n\n")
		block(FlagUsages(c.InheritedFlags()))
	}
	b.WriteString("### See also\n\n")
	if p := c.Parent(); p != nil {
		fmt.Fprintf(&b, "* [%s](%s) - %s\n", p.CommandPath(), pageName(p), p.Short)
	}
	for _, sub := range documented(c) {
		fmt.Fprintf(&b, "* [%s](%s) - %s\n", sub.CommandPath(), pageName(sub), sub.Short)
	}
	return b.Bytes()
}
