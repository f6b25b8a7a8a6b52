package budget

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The IPGuards' pauses, per API host (bounded: an allowed Finch API host,
// at most MaxIPGuards). The calls refused during a pause are counted by the
// Finch client (finch_api_ip_penalty_refused_total), which knows the app.
// Operator-wide (no namespace or app label): the penalty is Finch's answer to
// the operator's egress IP, whatever app called.
var ipPenaltyUntil = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "finch_api_ip_penalty_until_timestamp_seconds",
	Help: "Unix time at which the operator's pause for Finch's per-IP rate-limit penalty (429 finch_api_ip_rl) at the API host (scheme://host:port) ends; 0 when there is none.",
}, []string{"host"})

func init() {
	metrics.Registry.MustRegister(ipPenaltyUntil)
}
