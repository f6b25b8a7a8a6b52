#!/usr/bin/env bash
# Scale and Finch-economy benchmark: envtest API server + Finch simulator +
# bin/manager as a separate process. Prints a summary table; results and
# manager logs go to bin/bench-runs/bench-<time>/.
#
#   BENCH_N            FinchConnections (default 2000)
#   BENCH_WORKERS      manager --max-concurrent-reconciles and bench concurrency (default: the manager's, 10)
#   BENCH_MANAGER_ARGS extra manager flags (default none: the manager runs with cmd/manager's
#                      defaults), e.g. "--kube-api-qps=200 --kube-api-burst=400"
#   BENCH_MANAGER_ENV  extra manager environment, e.g. "GOGC=50"
#   BENCH_MANAGER_BIN  manager binary to test (default: built from ./cmd/manager like `make build`)
#   BENCH_ARGS         extra bench flags (see: go run ./test/bench -h), e.g. "-skip memory"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-$(./hack/envtest.sh --print-dir)}
go build -o bin/finch-bench ./test/bench
# The manager under test, built exactly like `make build` builds bin/manager,
# into a private path so a concurrent rebuild or clean of bin/ cannot pull it
# from under a running benchmark. BENCH_MANAGER_BIN overrides it.
manager=${BENCH_MANAGER_BIN:-}
if [ -z "$manager" ]; then
  manager="$root/bin/finch-bench-manager"
  CGO_ENABLED=0 go build -trimpath -o "$manager" ./cmd/manager
fi
# shellcheck disable=SC2086
exec ./bin/finch-bench -mode bench \
  -n "${BENCH_N:-2000}" \
  ${BENCH_WORKERS:+-workers "$BENCH_WORKERS"} \
  -manager "$manager" \
  -manager-args "${BENCH_MANAGER_ARGS:-}" \
  -manager-env "${BENCH_MANAGER_ENV:-}" \
  ${BENCH_ARGS:-}
