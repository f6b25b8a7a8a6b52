#!/usr/bin/env bash
# Resilience soak: Finch faults (5xx bursts, 429 + Retry-After, 2 s latency,
# commit-then-drop), SIGKILLs of the manager, then two replicas under leader
# election with the leader SIGKILLed. Stops by itself; prints a summary table;
# results and manager logs go to bin/bench-runs/soak-<time>/.
#
#   SOAK_N             FinchConnections (default 500)
#   SOAK_SEED          random seed for the kill moments (default: clock)
#   SOAK_MANAGER_ARGS  extra manager flags
#   SOAK_MANAGER_ENV   extra manager environment, e.g. "GOGC=50"
#   SOAK_MANAGER_BIN   manager binary to test (default: built from ./cmd/manager like `make build`)
#   SOAK_ARGS          extra flags (see: go run ./test/bench -h)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-$(./hack/envtest.sh --print-dir)}
go build -o bin/finch-bench ./test/bench
# The manager under test, built exactly like `make build` builds bin/manager,
# into a private path so a concurrent rebuild or clean of bin/ cannot pull it
# from under a running benchmark. SOAK_MANAGER_BIN overrides it.
manager=${SOAK_MANAGER_BIN:-}
if [ -z "$manager" ]; then
  manager="$root/bin/finch-bench-manager"
  CGO_ENABLED=0 go build -trimpath -o "$manager" ./cmd/manager
fi
# shellcheck disable=SC2086
exec ./bin/finch-bench -mode soak \
  -n "${SOAK_N:-500}" \
  -seed "${SOAK_SEED:-0}" \
  -manager "$manager" \
  -manager-args "${SOAK_MANAGER_ARGS:-}" \
  -manager-env "${SOAK_MANAGER_ENV:-}" \
  ${SOAK_ARGS:-}
