#!/usr/bin/env bash
# Builds the operator image from the Dockerfile: `make docker-build` and `make test-e2e`.
#
#   IMG           image name (default finch-operator:dev)
#   VERSION, REVISION, CREATED
#                 stamped into the binary and the OCI labels (default: git describe, HEAD, its commit time)
#   BUILDER_IMAGE, RUNTIME_IMAGE
#                 the Dockerfile's bases (default golang:1.26, gcr.io/distroless/static:nonroot);
#                 hack/image-bases.sh uses them when the engine has or can pull them, else local
#                 stand-ins
#
# The build runs under BuildKit (the Dockerfile's FROM --platform=$BUILDPLATFORM needs it): with
# `docker buildx build --load` when buildx is installed, else through a client that still drives
# the engine's built-in BuildKit (DOCKER_BUILDKIT=1 on a client before 23.0, such as Debian's
# docker.io). --network host lets `go mod download` reach the module proxy from the build.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
IMG=${IMG:-finch-operator:dev}

mapfile -t bases < <("$root/hack/image-bases.sh")
VERSION=${VERSION:-$(git describe --tags --match 'v*' --always --dirty 2>/dev/null || echo devel)}
REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || true)}
# CREATED: the commit's time, so a rebuild of one commit labels the same image.
CREATED=${CREATED:-$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)}
args=(--network host --build-arg "GOPROXY=$(go env GOPROXY)" -t "$IMG"
  --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED")
for b in "${bases[@]}"; do read -r -a kv <<<"$b"; args+=("${kv[@]}"); done

client_major() { "$1" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1; }

start=$(date +%s)
if docker buildx version >/dev/null 2>&1; then
  echo "docker-build: docker buildx build ${args[*]} ." >&2
  docker buildx build --load --progress=plain "${args[@]}" .
else
  cli=""
  for c in docker /usr/bin/docker /usr/local/bin/docker; do
    command -v "$c" >/dev/null || continue
    m=$(client_major "$c")
    if [ -n "$m" ] && [ "$m" -lt 23 ]; then cli=$c; break; fi
  done
  if [ -z "$cli" ]; then
    echo "docker-build: need BuildKit: install the buildx plugin (docker-buildx), or a docker client before 23.0" >&2
    exit 1
  fi
  echo "docker-build: DOCKER_BUILDKIT=1 $cli build ${args[*]} ." >&2
  DOCKER_BUILDKIT=1 "$cli" build --progress=plain "${args[@]}" .
fi
echo "docker-build: built $IMG in $(($(date +%s) - start))s ($(docker image inspect -f '{{.Size}}' "$IMG" | awk '{printf "%.1f MiB", $1/1048576}'))" >&2
