package version

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestBuildInfoMetric(t *testing.T) {
	old := version
	version = "v1.2.3"
	t.Cleanup(func() { version = old })
	reg := prometheus.NewRegistry()
	if err := RegisterMetric(reg); err != nil {
		t.Fatal(err)
	}
	i := Get()
	want := `# HELP finch_operator_build_info A constant 1 labelled with the operator's version, VCS revision and Go version.
# TYPE finch_operator_build_info gauge
finch_operator_build_info{goversion="` + i.GoVersion + `",revision="` + i.Revision + `",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "finch_operator_build_info"); err != nil {
		t.Error(err)
	}
	if s := i.String(); !strings.HasPrefix(s, "v1.2.3") {
		t.Errorf("String() = %q", s)
	}
}
