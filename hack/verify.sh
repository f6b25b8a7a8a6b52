#!/usr/bin/env bash
# Pre-merge checks that need no API server: generated code and manifests are
# committed, go.mod is tidy, the tree is gofmt'ed, go vet and golangci-lint
# pass. `make verify` runs this; CI runs it before `make test`. Each check
# prints a banner; the first failure stops it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n=== %s\n' "$*"; }

# make manifests also regenerates the chart's copies of the CRDs, alerts and
# dashboard and the kustomize PrometheusRule (hack/sync-chart-crds.sh,
# hack/sync-monitoring.sh), so a stale copy fails here.
step "generated code and manifests are committed (make generate manifests)"
make --no-print-directory generate manifests >/dev/null
if [ -n "$(git status --porcelain)" ]; then
  git status --porcelain
  git --no-pager diff --stat
  echo "generated files drifted: run 'make generate manifests' and commit the result" >&2
  exit 1
fi

step "go.mod is tidy"
go mod tidy
if [ -n "$(git status --porcelain go.mod go.sum)" ]; then
  git --no-pager diff go.mod
  echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit" >&2
  exit 1
fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "$unformatted"
  echo "run 'make fmt'" >&2
  exit 1
fi

step "go vet (with the e2e and release build tags, so test/e2e and test/release are checked too)"
go vet -tags e2e ./...
go vet -tags release ./test/release/

step "golangci-lint (make lint; built into bin/ from the Go module proxy on first use)"
make --no-print-directory lint
