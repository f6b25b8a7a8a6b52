#!/usr/bin/env bash
# Reports changes of the exported API of pkg/... (what other modules import)
# since the last release tag, with golang.org/x/exp/cmd/apidiff (pinned in
# hack/tools.versions). Incompatible changes fail unless
# APIDIFF_ALLOW_INCOMPATIBLE=1 (then say so in CHANGELOG.md); compatible ones
# are listed. No v* tag yet: it says so and passes. APIDIFF_BASE=REF compares
# against another ref.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

base=${APIDIFF_BASE:-$(git describe --tags --abbrev=0 --match 'v*' 2>/dev/null || true)}
if [ -z "$base" ]; then
  echo "apidiff: no v* release tag yet: the exported API of pkg/... has no release to compare against"
  exit 0
fi
"$root/hack/tool.sh" apidiff
apidiff=$root/bin/apidiff
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir "$tmp/old"
git archive "$base" | tar -x -C "$tmp/old"

old_pkgs=$(cd "$tmp/old" && { [ -d pkg ] && go list ./pkg/... 2>/dev/null || true; })
new_pkgs=$(go list ./pkg/...)
incompatible=0
for p in $old_pkgs; do
  if ! grep -qxF "$p" <<<"$new_pkgs"; then
    echo "apidiff: $p: removed since $base (incompatible)"
    incompatible=1
    continue
  fi
  f=$tmp/$(echo "$p" | tr / _).export
  (cd "$tmp/old" && "$apidiff" -w "$f" "$p")
  out=$("$apidiff" "$f" "$p")
  [ -n "$out" ] || continue
  echo "apidiff: $p since $base:"
  sed 's/^/  /' <<<"$out"
  if grep -q '^Incompatible changes:' <<<"$out"; then incompatible=1; fi
done
for p in $new_pkgs; do
  grep -qxF "$p" <<<"$old_pkgs" || echo "apidiff: $p: new since $base"
done
if [ "$incompatible" = 1 ] && [ "${APIDIFF_ALLOW_INCOMPATIBLE:-}" != 1 ]; then
  echo "apidiff: incompatible changes to pkg/... since $base: keep the old API, or set APIDIFF_ALLOW_INCOMPATIBLE=1 and note the break in CHANGELOG.md" >&2
  exit 1
fi
echo "apidiff: pkg/... checked against $base"
