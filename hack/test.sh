#!/usr/bin/env bash
# Runs go test verbosely into a log and prints what a reader needs: one line
# per package, Ginkgo's spec summaries, and the details of any failure.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
log="$root/bin/test.log"
mkdir -p "$root/bin"
go test -v "$@" >"$log" 2>&1
rc=$?
# The example modules under examples/ (own go.mod) import the public kit as a
# downstream module does; when the whole tree is tested (./...), so are they,
# with the same flags.
flags=()
whole=false
for a in "$@"; do
  case "$a" in
    ./...) whole=true ;;
    ./* | ../* | github.com/*) ;; # this module's packages
    *) flags+=("$a") ;;
  esac
done
if $whole; then
  for mod in "$root"/examples/*/go.mod; do
    [ -f "$mod" ] || continue
    (cd "$(dirname "$mod")" && go test -v "${flags[@]}" ./...) >>"$log" 2>&1 || rc=1
  done
fi
grep -E '^(ok |FAIL|--- FAIL|panic:)|Ran [0-9]+ of [0-9]+ Specs|[0-9]+ Passed \|' "$log" | sed 's/\x1b\[[0-9;]*m//g'
if [ $rc -ne 0 ]; then
  echo
  echo "=== failures (full log: $log) ==="
  grep -nE -B2 -A40 '^--- FAIL|\[FAIL\]|panic:' "$log" | sed 's/\x1b\[[0-9;]*m//g' | head -n 400
fi
passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $rc
