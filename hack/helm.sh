#!/usr/bin/env bash
# Builds the helm CLI from the Go module proxy into bin/helm
# (hack/go-install-tool.sh). A no-op when bin/helm exists.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
HELM_VERSION=${HELM_VERSION:-v3.22.0}

if [ -x "$root/bin/helm" ]; then
  exit 0
fi

# shellcheck source=hack/go-install-tool.sh
. "$root/hack/go-install-tool.sh"
go_install_tool helm "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" \
  "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" "a few minutes" version --short
