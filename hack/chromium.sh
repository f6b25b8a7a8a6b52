#!/usr/bin/env bash
# Makes sure headless Chromium is there for the browser tests (test/browser,
# build tag "browser"): $CHROMIUM or `chromium` on PATH. When it is missing and
# this runs as root, it installs Debian's chromium package (as
# hack/docker-engine.sh does for Docker); otherwise it says what to do.
# Prints the browser's path.
set -euo pipefail

log() { echo "chromium: $*" >&2; }

if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then
  echo "$CHROMIUM"
  exit 0
fi
if command -v chromium >/dev/null; then
  command -v chromium
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "no chromium on PATH and this is not root: install Debian's chromium (sudo apt-get install -y chromium) or set CHROMIUM to a Chromium or Chrome binary"
  exit 1
fi
log "installing Debian's chromium (apt-get)"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null || { log "the chromium package installed no chromium command"; exit 1; }
command -v chromium
