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
  helm) ldflags="-X helm.sh/helm/v3/internal/version.version=$version" ;;
  promtool) ldflags="-X github.com/prometheus/common/version.Version=${version#v}" ;;
esac

mkdir -p "$root/bin"
echo "$name: building $pkg@$version into bin/$name (the first time takes a few minutes)" >&2
(cd "$root/bin" &&
  GOBIN="$root/bin" GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0 go install -ldflags "-s -w $ldflags" "$pkg@$version")
echo "$pkg@$version" >"$stamp"
