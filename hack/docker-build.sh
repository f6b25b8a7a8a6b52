#!/usr/bin/env bash
# Builds the operator image from the Dockerfile: `make docker-build` and `make test-e2e`.
#
#   IMG           image name (default finch-operator:dev)
#   TARGET        the Dockerfile target: manager (default) or finch-simulator
#   PLATFORM      the image's platform, e.g. linux/arm64 (default: the engine's); the binary is
#                 cross-compiled on the engine's platform, never emulated
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

mapfile -t bases < <(PLATFORM=${PLATFORM:-} "$root/hack/image-bases.sh")
VERSION=${VERSION:-$(git describe --tags --match 'v*' --always --dirty 2>/dev/null || echo devel)}
REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || true)}
# CREATED: the commit's time, so a rebuild of one commit labels the same image.
CREATED=${CREATED:-$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)}
args=(--network host --build-arg "GOPROXY=$(go env GOPROXY)" -t "$IMG"
  --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED")
for b in "${bases[@]}"; do read -r -a kv <<<"$b"; args+=("${kv[@]}"); done
[ -z "${PLATFORM:-}" ] || args+=(--platform "$PLATFORM")
[ -z "${TARGET:-}" ] || args+=(--target "$TARGET")

# shellcheck source=hack/buildkit.sh
. "$root/hack/buildkit.sh"
start=$(date +%s)
buildkit_build "${args[@]}" .
echo "docker-build: built $IMG in $(($(date +%s) - start))s ($(docker image inspect -f '{{.Size}}' "$IMG" | awk '{printf "%.1f MiB", $1/1048576}'))" >&2
