// Package version is the one place the release version lives in the
// binaries. `make build` and `make release` stamp it with -ldflags -X (see
// the Makefile's LDFLAGS); `go build` without them reports "devel".
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Set by the linker: -X github.com/connectops/finch-operator/internal/version.version=v0.1.0
var (
	version  = "devel"
	revision = ""
)

// Info is what a binary knows about its own build.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the build's version. Without a stamped revision it falls back
// to the VCS revision Go records in the binary (go build in a checkout).
func Get() Info {
	rev := revision
	if rev == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					rev = s.Value
				}
			}
		}
	}
	return Info{Version: version, Revision: rev, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}

// String is the one-line form `manager --version` prints.
func (i Info) String() string {
	s := i.Version
	if i.Revision != "" {
		s += " (" + shortRev(i.Revision) + ")"
	}
	return fmt.Sprintf("%s %s %s", s, i.GoVersion, i.Platform)
}

func shortRev(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}

// RegisterMetric registers finch_operator_build_info, a constant 1 labelled
// with the build (the convention of Prometheus' own *_build_info series), so
// dashboards and alerts can tell which version runs where.
func RegisterMetric(reg prometheus.Registerer) error {
	i := Get()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "finch_operator_build_info",
		Help: "A constant 1 labelled with the operator's version, VCS revision and Go version.",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(i.Version, i.Revision, i.GoVersion).Set(1)
	if err := reg.Register(g); err != nil {
		return fmt.Errorf("register build info: %w", err)
	}
	return nil
}
