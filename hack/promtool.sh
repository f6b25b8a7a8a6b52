#!/usr/bin/env bash
# Builds promtool (Prometheus's rule checker and rule unit-test runner) from
# the Go module proxy into bin/promtool (hack/go-install-tool.sh), so go.mod
# and go.sum stay free of the Prometheus server's dependencies. A no-op when
# bin/promtool exists.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}

if [ -x "$root/bin/promtool" ]; then
  exit 0
fi

# shellcheck source=hack/go-install-tool.sh
. "$root/hack/go-install-tool.sh"
go_install_tool promtool "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}" \
  "-X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}" "a few minutes" --version
