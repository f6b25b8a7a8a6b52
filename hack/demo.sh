#!/usr/bin/env bash
# One-command local demo (`make demo`): a real kube-apiserver + etcd on loopback, the Finch
# simulator, and the operator as plain processes, then the story of three employers:
#   acme    connects through the redirect flow, later needs re-authentication (webhook);
#   globex  connects through the embedded flow (code handed over as a labelled Secret);
#   initech connects and is deleted with deletionPolicy Disconnect.
#
# It ends with the day-2 view of the kubectl plugin (bin/kubectl-finch): `kubectl finch funnel`,
# `kubectl finch status acme` and `kubectl finch get`.
#
# Needs only Go, kubectl, curl, bash and coreutils. `make demo` first builds the control plane
# (`make envtest`) and bin/manager, bin/finchsim and bin/kubectl-finch (`make build`).
#
# Environment:
#   DEMO_KEEP=1       keep everything running after the story until Ctrl-C
#   DEMO_TIMEOUT=60   seconds each step may take before the demo fails
#   DEMO_DIR=.demo    where kubeconfig, logs, etcd data and certificates live; removed on exit
#                     (only the logs stay when the run fails)
#   DEMO_SIM_PORT=8090, DEMO_INBOUND_PORT=8082
#                     the ports hack/demo/samples/ points at; if one is taken, the demo picks a
#                     free port and rewrites the samples' URLs on the fly
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

DEMO_KEEP=${DEMO_KEEP:-0}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-60}
run_dir=${DEMO_DIR:-$root/.demo}
sim_port=${DEMO_SIM_PORT:-8090}
inbound_port=${DEMO_INBOUND_PORT:-8082}
ns=default
assets=${KUBEBUILDER_ASSETS:-$("$root/hack/envtest.sh" --print-dir)}
helper=$root/bin/demo-helper

export KUBECONFIG=$run_dir/kubeconfig
# Prefer the kubectl `make envtest` put next to the control plane (a link to /usr/bin/kubectl
# where there is one), so the demo works on a machine without kubectl on PATH.
KUBECTL=$(command -v kubectl || true)
[ -x "$assets/kubectl" ] && KUBECTL=$assets/kubectl
kubectl() { "$KUBECTL" "$@"; }

cp_pid="" sim_pid="" mgr_pid=""
started=$(date +%s)
owned=0    # 1: run_dir was created by this run, so cleanup may delete it
failed=0   # 1: keep the logs when cleaning up
finished=0 # 1: the story finished; Ctrl-C (DEMO_KEEP=1) is then a normal end

# --- output ------------------------------------------------------------------------------------

if [ -t 1 ]; then bold=$'\e[1m' green=$'\e[32m' red=$'\e[31m' dim=$'\e[2m' off=$'\e[0m'
else bold="" green="" red="" dim="" off=""; fi

step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }
say() { printf '    %s\n' "$*"; }
ok() { printf '    %s✓ %s%s\n' "$green" "$*" "$off"; }
waiting() { printf '    %s… %s%s\n' "$dim" "$*" "$off"; }
# run prints a command the way a reader would type it, then runs it.
run() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; "$@"; }

# fail explains what did not happen, shows the objects involved and the manager's last words, and
# exits non-zero (the EXIT trap stops everything).
fail() {
  local what=$1; shift
  failed=1
  printf '\n%sFAILED: %s%s\n' "$red$bold" "$what" "$off" >&2
  local name
  for name in "$@"; do
    printf '\n--- kubectl get fconn %s -o yaml\n' "$name" >&2
    kubectl get fconn "$name" -o yaml >&2 2>&1 || true
  done
  if [ -f "$run_dir/manager.log" ]; then
    printf '\n--- last 40 lines of the manager log (%s)\n' "$run_dir/manager.log" >&2
    tail -n 40 "$run_dir/manager.log" >&2
  fi
  exit 1
}

# --- processes -----------------------------------------------------------------------------------

# stop_pid sends SIGTERM to one process we started and waits for it, escalating to SIGKILL.
stop_pid() {
  local pid=$1 name=$2 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.2
  done
  echo "demo: $name (pid $pid) did not stop in 30s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# leftover_pids lists the etcd and kube-apiserver of this run (found by their data and cert
# directories, which are unique to it), should the control-plane helper have died without
# stopping them. Linux only; elsewhere it finds nothing.
leftover_pids() {
  local f pid args
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    args=$(tr '\0' ' ' <"$f" 2>/dev/null) || continue
    case "$args" in
      *"--data-dir=$run_dir/etcd "* | *"--cert-dir=$run_dir/apiserver "*) echo "$pid" ;;
    esac
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ "$rc" -ne 0 ] && failed=1
  if [ -n "$cp_pid$sim_pid$mgr_pid" ]; then
    printf '\n%s==> stopping the manager, the simulator and the control plane%s\n' "$bold" "$off"
  fi
  # The manager first, so it does not log a storm of errors about a vanished API server.
  stop_pid "$mgr_pid" manager
  stop_pid "$sim_pid" finchsim
  stop_pid "$cp_pid" control-plane
  local pid
  for pid in $(leftover_pids); do
    echo "demo: stopping leftover process $pid ($(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-80))" >&2
    kill -TERM "$pid" 2>/dev/null || true
  done
  if [ "$owned" = 1 ] && [ -d "$run_dir" ]; then
    if [ "$failed" = 1 ]; then
      # Keep only the logs of a failed run; etcd data, certificates and the kubeconfig go.
      find "$run_dir" -mindepth 1 -maxdepth 1 ! -name '*.log' -exec rm -rf {} +
      echo "demo: the run did not finish; its logs are kept in $run_dir/" >&2
    else
      rm -rf "$run_dir"
    fi
  fi
  exit "$rc"
}

trap cleanup EXIT
trap 'if [ "$finished" = 1 ]; then exit 0; else exit 130; fi' INT
trap 'if [ "$finished" = 1 ]; then exit 0; else exit 143; fi' TERM

# port_busy succeeds when something already listens on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_http polls a URL until it answers 2xx; the process behind it must stay alive meanwhile.
wait_http() {
  local url=$1 pid=$2 name=$3 log=$4 i
  for i in $(seq 1 $((DEMO_TIMEOUT * 5))); do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "--- $log" >&2; tail -n 40 "$log" >&2
      fail "$name exited during start-up"
    fi
    sleep 0.2
  done
  fail "$name did not answer $url within ${DEMO_TIMEOUT}s (log: $log)"
}

prepare() {
  local b
  for b in "$assets/kube-apiserver" "$assets/etcd" bin/manager bin/finchsim bin/kubectl-finch; do
    [ -x "$b" ] || { echo "demo: $b is missing; run \`make demo\` (it builds it first)" >&2; exit 1; }
  done
  [ -n "$KUBECTL" ] || { echo "demo: no kubectl on PATH or in $assets; run \`make envtest\`" >&2; exit 1; }
  # One demo at a time per directory: it holds a fixed kubeconfig path.
  if [ -f "$run_dir/demo.pid" ] && kill -0 "$(cat "$run_dir/demo.pid")" 2>/dev/null; then
    echo "demo: another demo (pid $(cat "$run_dir/demo.pid")) is using $run_dir; stop it or set DEMO_DIR" >&2
    exit 1
  fi
  # Never wipe a directory that is not ours (DEMO_DIR pointing somewhere by mistake).
  if [ -d "$run_dir" ] && [ -n "$(ls -A "$run_dir")" ] && [ ! -f "$run_dir/demo.pid" ] \
    && ! ls "$run_dir"/*.log >/dev/null 2>&1; then
    echo "demo: $run_dir exists and does not look like a demo directory; remove it or set DEMO_DIR" >&2
    exit 1
  fi
  rm -rf "$run_dir"   # what an earlier run left behind (logs of a failure, or a killed run)
  mkdir -p "$run_dir"
  owned=1
  echo $$ >"$run_dir/demo.pid"
  # A tiny Go helper (hack/demo) runs the control plane through controller-runtime's envtest and
  # stands in for jq. Same flags as `make build`, so it reuses bin/manager's build cache (other
  # flags would recompile every dependency); a no-op when up to date.
  CGO_ENABLED=0 go build -trimpath -o "$helper" ./hack/demo
}

# pick_ports keeps the samples' ports when free, else takes free ones (the samples are
# rewritten to match in apply_samples).
pick_ports() {
  local free
  mapfile -t free < <("$helper" ports 4)
  [ "${#free[@]}" = 4 ] || { echo "demo: could not find free loopback ports" >&2; exit 1; }
  if port_busy "$sim_port"; then
    say "port $sim_port is taken; the simulator uses ${free[0]} instead"; sim_port=${free[0]}
  fi
  if port_busy "$inbound_port"; then
    say "port $inbound_port is taken; the operator's inbound server uses ${free[1]} instead"; inbound_port=${free[1]}
  fi
  metrics_port=${free[2]} probe_port=${free[3]}
  sim_url=http://127.0.0.1:$sim_port
  inbound_url=http://127.0.0.1:$inbound_port
}

start_control_plane() {
  step "starting etcd and kube-apiserver $(basename "$assets") on loopback"
  "$helper" controlplane --assets "$assets" --dir "$run_dir" --kubeconfig "$KUBECONFIG" \
    >"$run_dir/controlplane-helper.log" 2>&1 &
  cp_pid=$!
  local i
  for i in $(seq 1 $((DEMO_TIMEOUT * 5))); do
    [ -f "$KUBECONFIG" ] && break
    if ! kill -0 "$cp_pid" 2>/dev/null; then
      tail -n 40 "$run_dir/controlplane-helper.log" "$run_dir/controlplane.log" >&2 || true
      fail "the control plane did not start"
    fi
    sleep 0.2
  done
  [ -f "$KUBECONFIG" ] || fail "the control plane did not start within ${DEMO_TIMEOUT}s (see $run_dir/controlplane.log)"
  ok "$(head -n 1 "$run_dir/controlplane-helper.log")"
  run kubectl apply --server-side -f config/crd/bases || fail "the API server rejected the CRDs in config/crd/bases"
  # Both CRDs must be served before anything is created from them.
  kubectl wait --for=condition=Established --timeout="${DEMO_TIMEOUT}s" \
    crd/finchapps.finch.connectops.dev crd/finchconnections.finch.connectops.dev >/dev/null \
    || fail "the CRDs were not established"
}

start_sim() {
  step "starting the Finch simulator on $sim_url"
  local secret
  # The webhook secret must be the one the FinchApp sample points the operator at.
  secret=$(sed -n 's/^ *webhook_secret: *//p' hack/demo/samples/finch_v1alpha1_finchapp.yaml)
  [ -n "$secret" ] || fail "no webhook_secret in hack/demo/samples/finch_v1alpha1_finchapp.yaml"
  # `demo exec` keeps the pid and makes the process die with this script, even on kill -9.
  "$helper" exec bin/finchsim --addr "127.0.0.1:$sim_port" \
    --client-id demo-client-id --client-secret demo-client-secret \
    --webhook-url "$inbound_url/webhooks/$ns/default" --webhook-secret "$secret" \
    --initial-sync-delay 2s \
    --log-requests >"$run_dir/finchsim.log" 2>&1 &
  sim_pid=$!
  wait_http "$sim_url/_sim/state" "$sim_pid" finchsim "$run_dir/finchsim.log"
  ok "finchsim is up (pid $sim_pid, log $run_dir/finchsim.log)"
}

start_manager() {
  step "starting the operator (bin/manager); inbound server on $inbound_url"
  "$helper" exec bin/manager --metrics-bind-address="127.0.0.1:$metrics_port" \
    --health-probe-bind-address="127.0.0.1:$probe_port" \
    --inbound-bind-address="127.0.0.1:$inbound_port" \
    --finch-api-hosts="127.0.0.1:$sim_port" >"$run_dir/manager.log" 2>&1 &
  mgr_pid=$!
  wait_http "http://127.0.0.1:$probe_port/readyz" "$mgr_pid" manager "$run_dir/manager.log"
  # /readyz can answer before the inbound listener is up; the simulator's webhooks need it.
  local i
  for i in $(seq 1 $((DEMO_TIMEOUT * 5))); do port_busy "$inbound_port" && break; sleep 0.2; done
  port_busy "$inbound_port" || fail "the manager's inbound server is not listening on $inbound_url"
  ok "manager is up (pid $mgr_pid, log $run_dir/manager.log)"
}

apply_samples() {
  step "applying hack/demo/samples/ (FinchApp default, its Secrets, FinchConnections acme, globex, initech)"
  if [ "$sim_port" = 8090 ] && [ "$inbound_port" = 8082 ]; then
    run kubectl apply -n "$ns" -f hack/demo/samples/ || fail "the API server rejected hack/demo/samples/"
  else
    # The samples point at 127.0.0.1:8090 and :8082; follow the ports actually in use.
    mkdir -p "$run_dir/samples"
    local f
    for f in hack/demo/samples/*.yaml; do
      sed -e "s#http://127.0.0.1:8090#$sim_url#g" -e "s#http://127.0.0.1:8082#$inbound_url#g" \
        "$f" >"$run_dir/samples/$(basename "$f")"
    done
    say "(samples rewritten to apiURL $sim_url and publicURL $inbound_url)"
    run kubectl apply -n "$ns" -f "$run_dir/samples/" || fail "the API server rejected the samples in $run_dir/samples/"
  fi
}

# --- waiting -------------------------------------------------------------------------------------

# wait_fconn waits until a jsonpath of one or more FinchConnections has a value (or exists, when
# the value is empty), and fails loudly otherwise.
wait_fconn() {
  local path=$1 value=$2; shift 2
  local t0=$SECONDS cond="jsonpath={$path}" objs=() n
  [ -n "$value" ] && cond="$cond=$value"
  for n in "$@"; do objs+=("fconn/$n"); done
  kubectl wait -n "$ns" --for="$cond" --timeout="${DEMO_TIMEOUT}s" "${objs[@]}" >/dev/null \
    || fail "$* did not reach $path${value:+ == $value} within ${DEMO_TIMEOUT}s" "$@"
  ok "$* reached $path${value:+ == $value} ($((SECONDS - t0))s)"
}

wait_phase() {
  local name=$1 phase=$2
  waiting "waiting for $name to reach phase $phase..."
  wait_fconn .status.phase "$phase" "$name"
}

field() { kubectl get fconn -n "$ns" "$1" -o jsonpath="{$2}"; }

# browse opens a URL the way the employer's browser would (following redirects) and prints the
# text of the page it lands on.
browse() {
  local url=$1 out code final text
  out=$(curl -sSL --max-time 30 -w '\n%{http_code} %{url_effective}' "$url") || fail "could not open $url"
  code=$(tail -n 1 <<<"$out" | cut -d' ' -f1)
  final=$(tail -n 1 <<<"$out" | cut -d' ' -f2)
  out=$(sed '$d' <<<"$out")
  # The final URL carries the single-use code: show where the browser landed, not the code.
  say "the browser landed on ${final%%\?*} (HTTP $code); the page says:"
  text=$(sed -n -e 's:.*<h1>\(.*\)</h1>.*:\1:p' -e 's:.*<p>\(.*\)</p>.*:\1:p' <<<"$out" \
    | sed -e 's/&#39;/'"'"'/g' -e 's/&amp;/\&/g' -e 's/&quot;/"/g')
  [ -n "$text" ] || text=$(head -c 400 <<<"$out")
  sed 's/^/      | /' <<<"$text"
  [ "$code" = 200 ] || fail "the Connect flow for $url ended with HTTP $code"
}

# --- the story -----------------------------------------------------------------------------------

story_connect_urls() {
  step "1. every FinchConnection gets a secure Connect session"
  waiting "waiting for all three FinchConnections to get a Connect URL..."
  wait_fconn .status.session.connectURL "" acme globex initech
  wait_fconn .status.phase AwaitingConnect acme globex initech
  run kubectl get fconn -n "$ns" -o wide
}

story_redirect_flow() {
  step "2. acme's employer completes Finch Connect through the redirect flow"
  local url
  url=$(field acme .status.session.connectURL)
  say "the platform team sends acme this link: $url"
  say "acme opens it; Finch Connect redirects the browser to the operator's callback with a code"
  printf '%s$ curl -sSL "%s"%s\n' "$dim" "$url" "$off"
  browse "$url"
  wait_phase acme Connected
  run kubectl get fconn -n "$ns" acme
  say "the access token lives only in a Secret (its data is never shown here):"
  run kubectl get secret -n "$ns" acme-finch-token
  acme_connection=$(field acme .status.connectionID)
  [ -n "$acme_connection" ] || fail "acme is Connected but has no status.connectionID" acme
  ok "acme's connection ID: $acme_connection"
  say "Finch syncs acme's data and sends job.initial_data_sync_org.succeeded; wait for it:"
  printf '%s$ kubectl wait -n %s --for=condition=DataSynced fconn/acme%s\n' "$dim" "$ns" "$off"
  kubectl wait -n "$ns" --for=condition=DataSynced --timeout="${DEMO_TIMEOUT}s" fconn/acme >/dev/null \
    || fail "acme never got DataSynced (the initial data sync webhook)" acme
  ok "acme's data is ready to read (status.initialSync.organization: $(field acme .status.initialSync.organization))"
}

story_embedded_flow() {
  step "3. globex completes Finch Connect through the embedded flow"
  local sid code
  sid=$(field globex .status.session.id)
  say "globex's frontend opens embedded Connect with session $sid; onSuccess hands it a code"
  printf '%s$ curl -sS -X POST %s/_sim/sessions/%s/complete%s\n' "$dim" "$sim_url" "$sid" "$off"
  code=$(curl -fsS -X POST "$sim_url/_sim/sessions/$sid/complete" | "$helper" json code) \
    || fail "the simulator did not complete globex's session $sid" globex
  say "the backend hands the code to the operator as a labelled Secret (code not shown):"
  printf '%s$ kubectl apply -f - <<EOF  # Secret globex-code, type %s, label %s=globex%s\n' \
    "$dim" finch.connectops.dev/authorization-code finch.connectops.dev/connection "$off"
  # One apply, so the Secret appears already labelled (the operator only watches labelled ones).
  kubectl apply -n "$ns" -f - <<EOF || fail "could not create the code Secret globex-code" globex
apiVersion: v1
kind: Secret
metadata:
  name: globex-code
  labels:
    finch.connectops.dev/connection: globex
type: finch.connectops.dev/authorization-code
stringData:
  code: "$code"
EOF
  wait_phase globex Connected
  waiting "waiting for the operator to delete the used code Secret..."
  kubectl wait -n "$ns" --for=delete secret/globex-code --timeout="${DEMO_TIMEOUT}s" >/dev/null 2>&1 \
    || fail "the code Secret globex-code was not deleted after the exchange" globex
  ok "the code Secret globex-code is gone"
  run kubectl get secret -n "$ns" -l finch.connectops.dev/connection=globex
  run kubectl get fconn -n "$ns" globex
}

story_reauth() {
  step "4. Finch marks acme as needing re-authentication and sends a webhook"
  say "the simulator flips acme's connection to reauth and POSTs a signed account.updated webhook"
  say "to $inbound_url/webhooks/$ns/default"
  printf '%s$ curl -sS -X POST %s/_sim/connections/%s/status -d '"'"'{"status":"reauth"}'"'"'%s\n' \
    "$dim" "$sim_url" "$acme_connection" "$off"
  local status url after
  status=$(curl -fsS -X POST "$sim_url/_sim/connections/$acme_connection/status" -d '{"status":"reauth"}' \
    | "$helper" json status) || fail "the simulator refused to flip acme's connection status" acme
  say "simulator: connection $acme_connection is now \"$status\""
  wait_phase acme ReauthRequired
  waiting "waiting for acme's re-authentication session..."
  wait_fconn .status.session.kind Reauthenticate acme
  run kubectl get fconn -n "$ns" acme -o wide
  url=$(field acme .status.session.connectURL)
  say "re-authentication link for acme: $url"
  say "acme's employer opens it and signs in again:"
  printf '%s$ curl -sSL "%s"%s\n' "$dim" "$url" "$off"
  browse "$url"
  wait_phase acme Connected
  after=$(field acme .status.connectionID)
  [ "$after" = "$acme_connection" ] \
    || fail "acme's connection ID changed across re-authentication ($acme_connection -> $after)" acme
  ok "acme is Connected again with the same connection ID $after (a new token replaced the old one)"
  run kubectl get events -n "$ns" --field-selector involvedObject.name=acme --sort-by=.lastTimestamp
}

story_disconnect() {
  step "5. initech connects, then is deleted with deletionPolicy: Disconnect"
  local url conn disconnected
  url=$(field initech .status.session.connectURL)
  printf '%s$ curl -sSL "%s"%s\n' "$dim" "$url" "$off"
  browse "$url"
  wait_phase initech Connected
  conn=$(field initech .status.connectionID)
  ok "initech's connection ID: $conn"
  waiting "deleting initech; the operator disconnects it at Finch before letting it go..."
  run kubectl delete fconn -n "$ns" initech --wait --timeout="${DEMO_TIMEOUT}s" \
    || fail "fconn/initech was not deleted within ${DEMO_TIMEOUT}s" initech
  say "the simulator's view (GET $sim_url/_sim/state):"
  "$helper" simstate "$sim_url" | sed 's/^/      /'
  disconnected=$(curl -fsS "$sim_url/_sim/connections/$conn" | "$helper" json disconnected) \
    || fail "could not read initech's connection $conn from the simulator"
  [ "$disconnected" = true ] || fail "initech's connection $conn is not disconnected at Finch (disconnected=$disconnected)"
  ok "initech's connection $conn is disconnected at Finch"
  # The app's counts are recounted a moment (at most a few seconds) after a change, coalesced.
  waiting "waiting for FinchApp default to count the two connections left..."
  kubectl wait -n "$ns" --for=jsonpath='{.status.connections.total}'=2 --timeout="${DEMO_TIMEOUT}s" fapp/default >/dev/null \
    || fail "FinchApp default still counts $(kubectl get fapp -n "$ns" default -o jsonpath='{.status.connections.total}') connections after initech's deletion"
  run kubectl get fconn -n "$ns"
  run kubectl get fapp -n "$ns" -o wide
}

# kubectl runs bin/kubectl-finch as `kubectl finch` once bin/ is on PATH.
finch_plugin() { PATH="$root/bin:$PATH" "$KUBECTL" finch "$@"; }

story_plugin() {
  step "6. the day-2 view: the kubectl finch plugin (bin/kubectl-finch on PATH)"
  say "per FinchApp: where the employers are, drop-off and the median time to connect"
  printf '%s$ kubectl finch funnel%s\n' "$dim" "$off"
  finch_plugin funnel -n "$ns" || fail "kubectl finch funnel failed"
  say "one employer's whole story (the token Secret's value is never read):"
  printf '%s$ kubectl finch status acme%s\n' "$dim" "$off"
  finch_plugin status acme -n "$ns" || fail "kubectl finch status acme failed" acme
}

poke_around() {
  step "done in $(($(date +%s) - started))s"
  if [ "$DEMO_KEEP" = 1 ]; then
    say "everything keeps running until Ctrl-C. Poke around:"
  else
    say "everything stops now (DEMO_KEEP=1 make demo keeps it running). While it runs you can:"
  fi
  say "  export KUBECONFIG=$KUBECONFIG"
  say "  kubectl get fconn,fapp -A"
  say "  PATH=$root/bin:\$PATH kubectl finch get    # or: status acme, funnel, link, reauth, resync, ..."
  say "  kubectl describe fconn acme"
  say "  curl -s $sim_url/_sim/state        # the simulator's sessions and connections"
  say "  curl -s http://127.0.0.1:$metrics_port/metrics | grep ^finch   # operator metrics"
  say "  logs: $run_dir/{manager,finchsim,controlplane}.log"
}

main() {
  prepare
  pick_ports
  start_control_plane
  start_sim
  start_manager
  apply_samples
  story_connect_urls
  story_redirect_flow
  story_embedded_flow
  story_reauth
  story_disconnect
  story_plugin
  poke_around
  step "the demo's FinchConnections"
  printf '%s$ kubectl finch get%s\n' "$dim" "$off"
  finch_plugin get -n "$ns" || fail "kubectl finch get failed"
  finished=1
  if [ "$DEMO_KEEP" = 1 ]; then
    # Return when any of the three dies (or on Ctrl-C, through the traps).
    wait -n "$cp_pid" "$sim_pid" "$mgr_pid" || true
    finished=0
    fail "a demo process exited on its own; see the logs in $run_dir"
  fi
}

main "$@"
