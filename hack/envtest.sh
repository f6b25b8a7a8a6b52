#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver, etcd) from the Go module
# proxy into bin/k8s/<version>-<os>-<arch>/ and links kubectl beside them.
# setup-envtest downloads release binaries from the internet; building them
# needs only the Go module proxy, so it also works where nothing else is
# reachable (see docs/development.md). A no-op when the binaries exist.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
K8S_VERSION=${K8S_VERSION:-$(awk '$1 == "K8S_VERSION" { print $3 }' "$root/hack/tools.versions")}
goos=$(go env GOOS)
goarch=$(go env GOARCH)
dest="$root/bin/k8s/${K8S_VERSION}-${goos}-${goarch}"
mkdir -p "$dest"

if [ "${1:-}" = "--print-dir" ]; then
  echo "$dest"
  exit 0
fi

if [ ! -x "$dest/kube-apiserver" ]; then
  echo "envtest: building kube-apiserver v${K8S_VERSION} (first time takes about 5 minutes)" >&2
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X ${pkg}.gitVersion=v${K8S_VERSION} -X ${pkg}.gitMajor=${K8S_VERSION%%.*}"
  minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  ldflags="$ldflags -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
  ldflags="$ldflags -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  (cd "$root/hack/envtest/kube-apiserver" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dest/kube-apiserver.tmp" .)
  mv "$dest/kube-apiserver.tmp" "$dest/kube-apiserver"
fi

if [ ! -x "$dest/etcd" ]; then
  echo "envtest: building etcd" >&2
  (cd "$root/hack/envtest/etcd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dest/etcd.tmp" .)
  mv "$dest/etcd.tmp" "$dest/etcd"
fi

if [ ! -x "$dest/kubectl" ]; then
  kubectl_bin=$(command -v kubectl || true)
  if [ -z "$kubectl_bin" ]; then
    echo "envtest: kubectl not found on PATH; install it (kubectl v1.32 or newer is a prerequisite, see docs/development.md)" >&2
    exit 1
  fi
  ln -sf "$kubectl_bin" "$dest/kubectl"
fi
