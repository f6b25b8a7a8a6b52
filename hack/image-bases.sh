#!/usr/bin/env bash
# Makes sure the Dockerfile's two base images exist in the local Docker engine and prints the
# build arguments that select them (one `--build-arg NAME=VALUE` per line).
#
#   BUILDER_IMAGE  default golang:1.26
#   RUNTIME_IMAGE  default gcr.io/distroless/static:nonroot
#   PLATFORM       the target platform of the runtime base (default: the engine's, e.g. linux/amd64);
#                  the builder base always runs on the engine's platform (FROM --platform=$BUILDPLATFORM)
#
# Each base is used as is when the engine has it or can pull it. Where no registry is reachable
# (this project's CI machines), a stand-in is made from what the machine has and imported under a
# local name:
#   builder  the installed Go toolchain (GOROOT), CA certificates and a static busybox for the
#            RUN shell, with golang's environment (PATH, GOPATH=/go, GOTOOLCHAIN=local);
#   runtime  scratch plus distroless' nonroot user and group (65532), CA certificates, tzdata and
#            the world-writable /tmp and /home/nonroot that distroless ships.
# A stand-in is rebuilt when its inputs change (the Go version, the certificate bundle, busybox).
set -euo pipefail
# A failure inside $(…) (a missing busybox, say) must stop the script, not
# leave an empty value behind.
shopt -s inherit_errexit

BUILDER_IMAGE=${BUILDER_IMAGE:-golang:1.26}
RUNTIME_IMAGE=${RUNTIME_IMAGE:-gcr.io/distroless/static:nonroot}
LOCAL_BUILDER=finch-operator.local/golang:stand-in
ENGINE_PLATFORM=$(docker version -f '{{.Server.Os}}/{{.Server.Arch}}')
PLATFORM=${PLATFORM:-$ENGINE_PLATFORM}
# One stand-in per platform: the engine keeps one image per tag.
LOCAL_RUNTIME=finch-operator.local/distroless-static:stand-in-${PLATFORM//\//-}
PULL_TIMEOUT=${PULL_TIMEOUT:-60}

log() { echo "image-bases: $*" >&2; }
# shellcheck source=hack/buildkit.sh
. "$(dirname "$0")/buildkit.sh"

# have_or_pull succeeds when the engine has image $1 for platform $2 (default: the engine's) or
# pulls it within PULL_TIMEOUT.
have_or_pull() {
  local platform=${2:-$ENGINE_PLATFORM}
  [ "$(docker image inspect -f '{{.Os}}/{{.Architecture}}' "$1" 2>/dev/null)" = "$platform" ] && return 0
  [ "${OFFLINE:-0}" = 1 ] && return 1
  log "pulling $1 ($platform)"
  timeout "$PULL_TIMEOUT" docker pull -q --platform "$platform" "$1" >/dev/null 2>&1
}

# stand_in_current succeeds when image $1 exists with label finch-operator.stand-in=$2.
stand_in_current() {
  [ "$(docker image inspect -f '{{index .Config.Labels "finch-operator.stand-in"}}' "$1" 2>/dev/null)" = "$2" ]
}

certs() {
  local f
  for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
    [ -f "$f" ] && { echo "$f"; return; }
  done
  log "no CA certificate bundle on this machine (install ca-certificates)"; exit 1
}

static_busybox() {
  local f
  for f in /bin/busybox /usr/bin/busybox; do
    # A dynamically linked busybox would need the host's libc in the image.
    if [ -x "$f" ] && ! (command -v ldd >/dev/null && ldd "$f" >/dev/null 2>&1); then echo "$f"; return 0; fi
  done
  return 1
}

busybox() {
  static_busybox && return
  # A fresh machine: install it, as hack/docker-engine.sh installs docker.io.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "no static busybox on this machine: installing Debian's busybox-static (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >&2; }
    static_busybox && return
  fi
  log "no static busybox on this machine: apt-get install -y busybox-static"; exit 1
}

# owner_flags: as root the staged ownership goes in as is (/home/nonroot is 65532's, as in
# distroless); otherwise everything becomes root's, not the invoking user's.
owner_flags() { [ "$(id -u)" = 0 ] && echo --numeric-owner || echo "--owner=0 --group=0 --numeric-owner"; }

make_builder() {
  local goroot version bundle bb key stage
  goroot=$(go env GOROOT)
  version=$(go env GOVERSION)
  bundle=$(certs)
  bb=$(busybox)
  key="$version $(sha256sum "$bundle" | cut -c1-16) $(sha256sum "$bb" | cut -c1-16)"
  if stand_in_current "$LOCAL_BUILDER" "$key"; then echo "$LOCAL_BUILDER"; return; fi
  log "making the builder stand-in $LOCAL_BUILDER from $goroot ($version), $bundle and $bb"
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' RETURN
  mkdir -p "$stage/bin" "$stage/etc/ssl/certs" "$stage/tmp" "$stage/root" "$stage/go" "$stage/usr/local"
  chmod 1777 "$stage/tmp"
  cp "$bb" "$stage/bin/busybox"
  local a
  for a in sh cat cp ls mkdir mv rm env tar; do ln -s busybox "$stage/bin/$a"; done
  cp "$bundle" "$stage/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
  printf 'root:x:0:\n' >"$stage/etc/group"
  # GOROOT goes in as /usr/local/go, where golang's image keeps it.
  # One archive: the staged files ("./…") and GOROOT renamed to usr/local/go.
  tar -cf - $(owner_flags) -C "$stage" . \
    -C "$(dirname "$goroot")" --transform "s,^$(basename "$goroot"),usr/local/go," "$(basename "$goroot")" \
    | docker import \
      --change 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV GOPATH=/go' --change 'ENV GOTOOLCHAIN=local' --change 'ENV HOME=/root' \
      --change 'WORKDIR /go' --change "LABEL finch-operator.stand-in=\"$key\"" \
      - "$LOCAL_BUILDER" >/dev/null
  echo "$LOCAL_BUILDER"
}

make_runtime() {
  local bundle zoneinfo key stage
  bundle=$(certs)
  zoneinfo=/usr/share/zoneinfo
  [ -d "$zoneinfo" ] || { log "no $zoneinfo on this machine (install tzdata)"; exit 1; }
  key="$PLATFORM $(sha256sum "$bundle" | cut -c1-16) $(du -s "$zoneinfo" | cut -f1)"
  if stand_in_current "$LOCAL_RUNTIME" "$key"; then echo "$LOCAL_RUNTIME"; return; fi
  log "making the runtime stand-in $LOCAL_RUNTIME (scratch for $PLATFORM, user 65532, $bundle, $zoneinfo)"
  stage=$(mktemp -d)
  trap 'rm -rf "$stage" "$stage.ctx"' RETURN
  mkdir -p "$stage/etc/ssl/certs" "$stage/usr/share" "$stage/tmp" "$stage/home/nonroot" "$stage/root"
  chmod 1777 "$stage/tmp"
  chmod 700 "$stage/root"
  cp "$bundle" "$stage/etc/ssl/certs/ca-certificates.crt"
  cp -r "$zoneinfo" "$stage/usr/share/zoneinfo"
  # distroless/static's /etc/passwd and /etc/group.
  cat >"$stage/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$stage/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  [ "$(id -u)" = 0 ] && chown 65532:65532 "$stage/home/nonroot"
  # It holds no executable, so one tree serves every platform. `docker import` labels an image
  # with the engine's platform (its --platform needs an experimental engine), so the image is built
  # FROM scratch for $PLATFORM instead; with no RUN that needs no emulation.
  tar -cf "$stage.rootfs.tar" $(owner_flags) -C "$stage" .
  mkdir "$stage.ctx"
  mv "$stage.rootfs.tar" "$stage.ctx/rootfs.tar"
  cat >"$stage.ctx/Dockerfile" <<EOF2
FROM scratch
ADD rootfs.tar /
USER 65532
WORKDIR /home/nonroot
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL finch-operator.stand-in="$key"
EOF2
  buildkit_build --platform "$PLATFORM" -t "$LOCAL_RUNTIME" "$stage.ctx" >&2
  echo "$LOCAL_RUNTIME"
}

builder=$BUILDER_IMAGE
if ! have_or_pull "$BUILDER_IMAGE"; then
  log "$BUILDER_IMAGE is not available; using a stand-in"
  builder=$(make_builder)
fi
runtime=$RUNTIME_IMAGE
if ! have_or_pull "$RUNTIME_IMAGE" "$PLATFORM"; then
  log "$RUNTIME_IMAGE ($PLATFORM) is not available; using a stand-in"
  runtime=$(make_runtime)
fi
echo "--build-arg BUILDER_IMAGE=$builder"
echo "--build-arg RUNTIME_IMAGE=$runtime"
