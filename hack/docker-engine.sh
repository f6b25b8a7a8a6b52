#!/usr/bin/env bash
# Makes sure a Docker engine answers. When none does and this runs as root, it installs Debian's
# docker.io if dockerd is missing and starts dockerd in the background, then waits for its socket.
#
#   hack/docker-engine.sh start   print "started" when this call started the engine, else "running"
#   hack/docker-engine.sh stop    stop the engine a previous `start` started (no-op otherwise)
#
# State (pid file, engine log) lives under bin/docker-engine/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=$root/bin/docker-engine
ENGINE_TIMEOUT=${ENGINE_TIMEOUT:-90}

log() { echo "docker-engine: $*" >&2; }

answers() { timeout 10 docker info >/dev/null 2>&1; }

start() {
  if answers; then echo running; return; fi
  if [ "$(id -u)" != 0 ]; then
    log "no Docker engine answers and this is not root: start one (or add yourself to the docker group) and run again"
    exit 1
  fi
  if ! command -v dockerd >/dev/null; then
    log "installing Debian's docker.io (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  command -v docker >/dev/null || { log "docker.io installed no docker client"; exit 1; }
  mkdir -p "$state"
  log "starting dockerd (log $state/dockerd.log)"
  # setsid: the engine must not die with this shell's process group, nor take it down.
  setsid dockerd >"$state/dockerd.log" 2>&1 </dev/null &
  echo $! >"$state/dockerd.pid"
  local i
  for i in $(seq 1 $((ENGINE_TIMEOUT * 2))); do
    answers && { echo started; return; }
    kill -0 "$(cat "$state/dockerd.pid")" 2>/dev/null || { tail -n 20 "$state/dockerd.log" >&2; log "dockerd exited"; exit 1; }
    sleep 0.5
  done
  tail -n 20 "$state/dockerd.log" >&2
  log "dockerd did not answer within ${ENGINE_TIMEOUT}s"
  exit 1
}

stop() {
  [ -f "$state/dockerd.pid" ] || return 0
  local pid i
  pid=$(cat "$state/dockerd.pid")
  rm -f "$state/dockerd.pid"
  kill -0 "$pid" 2>/dev/null || return 0
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  log "dockerd did not stop in 30s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
