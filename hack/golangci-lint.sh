#!/usr/bin/env bash
# Builds golangci-lint v2 from the Go module proxy into bin/golangci-lint
# (hack/go-install-tool.sh). A no-op when bin/golangci-lint exists and reports
# GOLANGCI_LINT_VERSION (bumping the pin rebuilds it). It is built with the
# project's Go toolchain, so it understands the Go version in go.mod.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
GOLANGCI_LINT_VERSION=${GOLANGCI_LINT_VERSION:-v2.15.0}

if [ -x "$root/bin/golangci-lint" ] &&
  [ "$("$root/bin/golangci-lint" version --short 2>/dev/null)" = "${GOLANGCI_LINT_VERSION#v}" ]; then
  exit 0
fi

# shellcheck source=hack/go-install-tool.sh
. "$root/hack/go-install-tool.sh"
go_install_tool golangci-lint "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@${GOLANGCI_LINT_VERSION}" \
  "" "several minutes" version
