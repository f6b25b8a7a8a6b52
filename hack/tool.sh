#!/usr/bin/env bash
# hack/tool.sh NAME [--version]: builds tool NAME at its pin in hack/tools.versions
# from the Go module proxy into bin/NAME (a no-op when bin/NAME was built from
# that pin); --version prints the pin. `go install pkg@version` builds in
# module-aware mode outside this repository's module, so go.mod stays untouched.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: hack/tool.sh NAME [--version]}
read -r pkg version < <(awk -v n="$name" '$1 == n { print $2, $3 }' "$root/hack/tools.versions")
[ -n "${version:-}" ] || { echo "tool.sh: no pin for $name in hack/tools.versions" >&2; exit 1; }
if [ "${2:-}" = --version ]; then
  echo "$version"
  exit 0
fi

stamp="$root/bin/.$name.pin"
if [ -x "$root/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg@$version" ]; then
  exit 0
fi

# Version stamps some tools print for themselves.
ldflags=""
case "$name" in
  # helm template/lint default to the Kubernetes version stamped here (helm's own Makefile
  # stamps its client-go's; unstamped it is 1.20, which the chart's kubeVersion refuses).
  helm)
    k8s=$(awk '$1 == "K8S_VERSION" { print $3 }' "$root/hack/tools.versions")
    ldflags="-X helm.sh/helm/v3/internal/version.version=$version"
    for pkgvar in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
      ldflags="$ldflags -X $pkgvar.k8sVersionMajor=${k8s%%.*} -X $pkgvar.k8sVersionMinor=$(echo "$k8s" | cut -d. -f2)"
    done
    ;;
  promtool) ldflags="-X github.com/prometheus/common/version.Version=${version#v}" ;;
esac

mkdir -p "$root/bin"
echo "$name: building $pkg@$version into bin/$name (the first time takes a few minutes)" >&2
(cd "$root/bin" &&
  GOBIN="$root/bin" GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0 go install -ldflags "-s -w $ldflags" "$pkg@$version")
echo "$pkg@$version" >"$stamp"
