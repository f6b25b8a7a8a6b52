#!/usr/bin/env bash
# `make test-release`: cuts a release (`make release`) into a real OCI registry (CNCF Distribution,
# built from the Go module proxy) on 127.0.0.1, then consumes it as a user would (test/release): the
# image index and its arm64 binary, `helm install oci://…`, `kubectl apply -f dist/install.yaml`,
# `kubectl krew install`. Then the upgrade test (test/e2e TestUpgrade): from the released chart to
# the working tree's image. The registry (storage in a temp dir) is stopped on exit.
#
#   RELEASE_VERSION=v0.1.0     the version to release (default: the chart's appVersion)
#   IMG=finch-operator:e2e     the working tree's image for the upgrade (`make test-e2e` builds it;
#                              built here when absent)
#   RELEASE_STEP_TIMEOUT=120s  how long each awaited state may take
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
started_at=$(date +%s)
RELEASE_VERSION=${RELEASE_VERSION:-$(awk '$1 == "appVersion:" { gsub(/"/, "", $2); print $2 }' charts/finch-operator/Chart.yaml)}
IMG=${IMG:-finch-operator:e2e}
logs=$root/bin/release-test
step() { printf '\n=== %s (%ss)\n' "$*" "$(($(date +%s) - started_at))"; }

work=$(mktemp -d)
registry_pid=""
engine=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  if [ "$engine" = started ] && [ "${E2E_KEEP_ENGINE:-0}" != 1 ]; then "$root/hack/docker-engine.sh" stop || true; fi
  rm -rf "$work"
  if [ "$rc" = 0 ]; then
    echo "test-release: passed in $(($(date +%s) - started_at))s"
  else
    echo "test-release: FAILED (exit $rc) after $(($(date +%s) - started_at))s; logs in $logs/" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "tools: registry, crane (hack/tools.versions)"
for t in registry crane; do "$root/hack/tool.sh" "$t"; done

step "Docker engine"
engine=$("$root/hack/docker-engine.sh" start)

step "registry on 127.0.0.1 (storage $work/registry)"
mkdir -p "$logs"
port=""
for attempt in 1 2 3 4 5; do
  # A free port from the kernel; the registry binds it a moment later (retried if taken meanwhile).
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000)))
  cat >"$work/registry.yml" <<EOC
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOC
  "$root/bin/registry" serve "$work/registry.yml" >"$logs/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 1 60); do
    curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break 2
    kill -0 "$registry_pid" 2>/dev/null || break
    sleep 0.5
  done
  kill "$registry_pid" 2>/dev/null || true
  wait "$registry_pid" 2>/dev/null || true
  registry_pid=""
done
[ -n "$registry_pid" ] || { tail -n 20 "$logs/registry.log" >&2; echo "test-release: the registry did not start" >&2; exit 1; }
export REGISTRY=127.0.0.1:$port/connectops
echo "registry http://127.0.0.1:$port (pid $registry_pid), REGISTRY=$REGISTRY"

step "make release VERSION=$RELEASE_VERSION REGISTRY=$REGISTRY (log $logs/release.log)"
if ! make -s release VERSION="$RELEASE_VERSION" REGISTRY="$REGISTRY" >"$logs/release.log" 2>&1; then
  tail -n 40 "$logs/release.log" >&2
  exit 1
fi
grep -E '^(===|  |image-bases|docker-build|[0-9]+\.)' "$logs/release.log" || true

# What the upgrade test and anyone after this step reads.
export RELEASE_CHART=oci://$REGISTRY/charts/finch-operator
export RELEASE_CHART_VERSION=${RELEASE_VERSION#v}
RELEASE_IMAGE=$(grep "^$REGISTRY/finch-operator:" dist/images.txt)
export RELEASE_IMAGE

step "krew (hack/tools.versions)"
"$root/hack/tool.sh" krew

step "consume the release as a user (test/release)"
go test -tags release -count=1 -v -timeout 30m ./test/release/ -args \
  -registry="$REGISTRY" -version="$RELEASE_VERSION" -dist="$root/dist" \
  -helm="$root/bin/helm" -crane="$root/bin/crane" -krew="$root/bin/krew" \
  -step-timeout="${RELEASE_STEP_TIMEOUT:-120s}" -log-dir="$logs"

if ! docker image inspect "$IMG" >/dev/null 2>&1; then
  step "build the working tree's image $IMG"
  IMG=$IMG "$root/hack/docker-build.sh" >"$logs/build.log" 2>&1 || { tail -n 40 "$logs/build.log" >&2; exit 1; }
fi
step "upgrade from $RELEASE_CHART $RELEASE_CHART_VERSION to $IMG (test/e2e TestUpgrade)"
go test -tags e2e -count=1 -v -timeout 30m ./test/e2e/ -run '^TestUpgrade$' -args \
  -from-chart="$RELEASE_CHART" -from-version="$RELEASE_CHART_VERSION" -from-helm-flags=--plain-http \
  -to-image="$IMG" -helm="$root/bin/helm" -step-timeout="${RELEASE_STEP_TIMEOUT:-120s}" \
  -log-dir="$logs/upgrade"
