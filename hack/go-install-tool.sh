# Sourced by hack/helm.sh, hack/promtool.sh and hack/golangci-lint.sh: builds
# one tool from the Go module proxy into bin/ (no internet is needed beyond
# the module proxy). `go install pkg@version` builds in module-aware mode
# outside this repository's module, so go.mod and go.sum stay untouched.
#
#   go_install_tool NAME PACKAGE@VERSION LDFLAGS HOW-LONG VERSION-ARGS...
go_install_tool() {
  local name=$1 pkg=$2 ldflags=$3 how_long=$4
  shift 4
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  mkdir -p "$root/bin"
  echo "$name: building ${pkg##*/} into bin/$name (first time takes $how_long)" >&2
  (cd "$root/bin" &&
    GOBIN="$root/bin" GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0 go install -ldflags "-s -w $ldflags" "$pkg")
  "$root/bin/$name" "$@" >&2
}
