#!/usr/bin/env bash
# `make test-e2e`: builds the operator image from the Dockerfile and runs it the way its
# Deployment says, under the install artifacts' RBAC, against a real API server (envtest) and the
# Finch simulator (test/e2e). Starts a Docker engine when none answers (installing Debian's
# docker.io as root if needed) and stops what it started.
#
#   IMG=finch-operator:e2e   the image to build and run
#   E2E_SKIP_BUILD=1         run an image built earlier
#   E2E_KEEP_ENGINE=1        leave an engine this run started running
#   E2E_STEP_TIMEOUT=90s     how long each awaited state may take
#   E2E_TIMEOUT=30m          each go test run
#   E2E_UPGRADE=0            skip the upgrade test (TestUpgrade)
#   E2E_UPGRADE_ARGS=...     more flags for TestUpgrade (-from-chart, -from-version, -from-image,
#                            -to-image, -from-helm-flags; `make test-release` upgrades from the
#                            released chart this way)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
IMG=${IMG:-finch-operator:e2e}
logs=$root/bin/e2e
started_at=$(date +%s)

step() { printf '\n=== %s\n' "$*"; }

engine=""
leftovers() {
  local ids
  ids=$(docker ps -aq --filter label=finch-operator.e2e=1 2>/dev/null || true)
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$engine" ]; then
    leftovers
    if [ "$engine" = started ] && [ "${E2E_KEEP_ENGINE:-0}" != 1 ]; then
      "$root/hack/docker-engine.sh" stop || true
    fi
  fi
  if [ "$rc" = 0 ]; then
    echo "test-e2e: passed in $(($(date +%s) - started_at))s"
  else
    echo "test-e2e: FAILED (exit $rc) after $(($(date +%s) - started_at))s; logs in $logs/ and bin/e2e-build.log" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Docker engine"
engine=$("$root/hack/docker-engine.sh" start)
docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}'
leftovers

mkdir -p "$root/bin"
if [ "${E2E_SKIP_BUILD:-0}" != 1 ]; then
  step "build $IMG from the Dockerfile (log bin/e2e-build.log)"
  if ! IMG=$IMG "$root/hack/docker-build.sh" >"$root/bin/e2e-build.log" 2>&1; then
    tail -n 40 "$root/bin/e2e-build.log" >&2
    echo "test-e2e: the image did not build" >&2
    exit 1
  fi
  grep -E '^(image-bases|docker-build):' "$root/bin/e2e-build.log" || true
fi

step "run the image as the Deployment does (test/e2e)"
go test -tags e2e -count=1 -v -timeout "${E2E_TIMEOUT:-30m}" ./test/e2e/ -run '^TestE2E$' -args \
  -image="$IMG" -installer="$root/dist/install.yaml" -helm="$root/bin/helm" \
  -step-timeout="${E2E_STEP_TIMEOUT:-90s}" -log-dir="$logs"

if [ "${E2E_UPGRADE:-1}" != 0 ]; then
  step "helm upgrade under traffic loses nothing (TestUpgrade, the same image)"
  upgrade_at=$(date +%s)
  # shellcheck disable=SC2086 # E2E_UPGRADE_ARGS is a list of flags
  go test -tags e2e -count=1 -v -timeout "${E2E_TIMEOUT:-30m}" ./test/e2e/ -run '^TestUpgrade$' -args \
    -image="$IMG" -helm="$root/bin/helm" -step-timeout="${E2E_STEP_TIMEOUT:-90s}" -log-dir="$logs" \
    ${E2E_UPGRADE_ARGS:-}
  echo "test-e2e: TestUpgrade took $(($(date +%s) - upgrade_at))s"
fi
