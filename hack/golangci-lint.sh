#!/usr/bin/env bash
# Builds golangci-lint v2 from the Go module proxy into bin/golangci-lint (no
# internet is needed beyond the module proxy). A no-op when bin/golangci-lint
# exists and reports GOLANGCI_LINT_VERSION (bumping the pin rebuilds it).
# `go install pkg@version` builds in module-aware mode outside this repo's
# module, so go.mod and go.sum are left untouched. It is built with the
# project's Go toolchain, so it understands the Go version in go.mod.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
GOLANGCI_LINT_VERSION=${GOLANGCI_LINT_VERSION:-v2.15.0}

if [ -x "$root/bin/golangci-lint" ] &&
  [ "$("$root/bin/golangci-lint" version --short 2>/dev/null)" = "${GOLANGCI_LINT_VERSION#v}" ]; then
  exit 0
fi

mkdir -p "$root/bin"
echo "golangci-lint: building golangci-lint ${GOLANGCI_LINT_VERSION} into bin/golangci-lint (first time takes several minutes)" >&2
cd "$root/bin"
GOBIN="$root/bin" GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0 \
  go install -ldflags "-s -w" \
  "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@${GOLANGCI_LINT_VERSION}"
"$root/bin/golangci-lint" version >&2
