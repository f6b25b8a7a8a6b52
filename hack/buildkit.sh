# Sourced by hack/docker-build.sh and hack/image-bases.sh: buildkit_build ARGS... runs
# `docker build ARGS...` under BuildKit (FROM --platform=$BUILDPLATFORM and a --platform other than
# the engine's need it): `docker buildx build --load` when buildx is installed, else a client that
# still drives the engine's built-in BuildKit (DOCKER_BUILDKIT=1 on a client before 23.0, such as
# Debian's docker.io; later clients without buildx fall back to the legacy builder).

buildkit_client_major() { "$1" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1; }

buildkit_build() {
  if docker buildx version >/dev/null 2>&1; then
    echo "buildkit: docker buildx build --load $*" >&2
    docker buildx build --load --progress=plain "$@"
    return
  fi
  local c m cli=""
  for c in docker /usr/bin/docker /usr/local/bin/docker; do
    command -v "$c" >/dev/null || continue
    m=$(buildkit_client_major "$c")
    if [ -n "$m" ] && [ "$m" -lt 23 ]; then cli=$c; break; fi
  done
  if [ -z "$cli" ]; then
    echo "buildkit: need BuildKit: install the buildx plugin (docker-buildx), or a docker client before 23.0" >&2
    return 1
  fi
  echo "buildkit: DOCKER_BUILDKIT=1 $cli build $*" >&2
  DOCKER_BUILDKIT=1 "$cli" build --progress=plain "$@"
}
