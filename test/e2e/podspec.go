// Package e2e runs the operator's container image the way its Deployment
// says, against a real API server and the Finch simulator (`make test-e2e`).
// The end-to-end test itself is behind the e2e build tag; the Pod spec it
// runs comes from test/podrun, shared with test/release.
package e2e

import "github.com/connectops/finch-operator/test/podrun"

// The Pod spec reader lives in test/podrun; these names keep this package's
// tests reading as before.
type (
	Pod         = podrun.Pod
	ImageConfig = podrun.ImageConfig
	HTTPProbe   = podrun.HTTPProbe
	Tmpfs       = podrun.Tmpfs
)

// ServiceAccountDir is where the kubelet mounts a Pod's ServiceAccount token.
const ServiceAccountDir = podrun.ServiceAccountDir

// FromDeployment reads the Pod template of a Deployment (podrun.FromDeployment).
var FromDeployment = podrun.FromDeployment
