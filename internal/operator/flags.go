package operator

import (
	"flag"

	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// CommandLine is everything cmd/manager's command line sets: the operator's
// options, controller-runtime's logging flags and --version.
type CommandLine struct {
	Options Options
	Zap     zap.Options
	Version bool
}

// BindManagerFlags registers cmd/manager's whole command line on fs and
// returns where the values land. cmd/manager and the flag reference generator
// (hack/docs/flags, docs/reference/flags.md) both call it, so the reference
// lists exactly the flags the binary takes. --kubeconfig is controller-runtime's,
// registered on flag.CommandLine by its config package; it is added to any
// other FlagSet here.
func BindManagerFlags(fs *flag.FlagSet) *CommandLine {
	c := &CommandLine{}
	c.Options.BindFlags(fs)
	c.Zap.BindFlags(fs)
	fs.BoolVar(&c.Version, "version", false, "Print the version and exit.")
	if fs != flag.CommandLine && fs.Lookup(config.KubeconfigFlagName) == nil {
		if f := flag.CommandLine.Lookup(config.KubeconfigFlagName); f != nil {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	}
	return c
}
