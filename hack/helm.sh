#!/usr/bin/env bash
# Builds the helm CLI from the Go module proxy into bin/helm (no internet is
# needed beyond the module proxy). A no-op when bin/helm exists.
# `go install pkg@version` builds in module-aware mode outside this repo's
# module, so go.mod and go.sum are left untouched.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
HELM_VERSION=${HELM_VERSION:-v3.22.0}

if [ -x "$root/bin/helm" ]; then
  exit 0
fi

mkdir -p "$root/bin"
echo "helm: building helm ${HELM_VERSION} into bin/helm (first time takes a few minutes)" >&2
cd "$root/bin"
GOBIN="$root/bin" GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0 \
  go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
  "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
"$root/bin/helm" version --short >&2
