#!/usr/bin/env bash
# Pre-merge checks that need no API server: generated code and manifests are
# committed, go.mod is tidy, the tree is gofmt'ed, go vet and golangci-lint
# pass, and actionlint accepts the GitHub workflows. `make verify` runs this; CI runs it before `make test`. Each check
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

# docs/reference/flags.md comes from the manager's FlagSet and api.md from
# the CRDs just regenerated above, so a new flag or field without its
# regenerated reference fails here.
step "generated docs are committed (make docs)"
make --no-print-directory docs >/dev/null
if [ -n "$(git status --porcelain docs/reference)" ]; then
  git status --porcelain docs/reference
  git --no-pager diff --stat docs/reference
  echo "docs/reference drifted: run 'make docs' and commit the result" >&2
  exit 1
fi

step "the chart README is generated from values.yaml (make chart-docs)"
make --no-print-directory chart-docs >/dev/null
if [ -n "$(git status --porcelain charts/finch-operator/README.md)" ]; then
  git --no-pager diff charts/finch-operator/README.md
  echo "charts/finch-operator/README.md drifted from values.yaml or README.md.gotmpl: run 'make chart-docs' and commit" >&2
  exit 1
fi

step "the kubectl finch reference is generated (make docs-kubectl-finch)"
make --no-print-directory docs-kubectl-finch >/dev/null
if [ -n "$(git status --porcelain docs/reference/kubectl-finch)" ]; then
  git status --porcelain docs/reference/kubectl-finch
  echo "docs/reference/kubectl-finch drifted: run 'make docs-kubectl-finch' and commit the result" >&2
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

step "go vet (with the e2e, browser and release build tags, so test/e2e, test/browser and test/release are checked too)"
go vet -tags e2e,browser ./...
go vet -tags release ./test/release/

step "golangci-lint (make lint; built into bin/ from the Go module proxy on first use)"
make --no-print-directory lint

step "example modules (examples/*/): go.mod tidy, gofmt'ed, go vet"
for mod in examples/*/go.mod; do
  [ -f "$mod" ] || continue
  dir=$(dirname "$mod")
  (cd "$dir" && go mod tidy && go vet ./...)
  if [ -n "$(git status --porcelain "$dir")" ]; then
    git --no-pager diff "$dir"
    echo "$dir: go.mod/go.sum are not tidy: run 'go mod tidy' in $dir and commit" >&2
    exit 1
  fi
done

step "exported API of pkg/... against the last release tag (hack/apidiff.sh)"
./hack/apidiff.sh
# The workflows cannot run here (no GitHub runner); actionlint checks their
# syntax, expressions, action inputs and (when shellcheck is installed) their scripts.
step "actionlint (.github/workflows; make actionlint builds it into bin/)"
"$root/hack/tool.sh" actionlint
"$root/bin/actionlint"
