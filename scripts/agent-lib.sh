# Sourced by the scripts: start a command that announces `listening on http://ADDR` (the
# agent, or the demo service) on a loopback port, and stop it when the script exits.
#
#   . scripts/agent-lib.sh
#   start_announcing env RUST_LOG=warn ./target/debug/perfpilot run --listen 127.0.0.1:0
#   curl "$base/health"
#
# Sets $pid (the process), $base (its http://127.0.0.1:PORT) and $out (a scratch directory
# with its stdout and stderr, removed on exit).
#
# Several processes at once: `start_announcing_as NAME command...` keeps each one's output in
# $out/NAME.stdout and .stderr, sets $pid and $base the same way, and stops every one on exit.

out=$(mktemp -d)
pid=
started_pids=()
# The bench scripts run the demo service beside an agent: its pid, stopped on exit as well.
demo_pid=
stop_pid() { # $1 = a pid
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
stop_started() {
  stop_pid "$demo_pid"
  stop_pid "$pid"
  for started in "${started_pids[@]}"; do stop_pid "$started"; done
  rm -rf "$out"
}
trap stop_started EXIT

start_announcing_as() {
  local name=$1
  shift
  "$@" >"$out/$name.stdout" 2>"$out/$name.stderr" &
  pid=$!
  started_pids+=("$pid")
  wait_announced "$out/$name.stdout" "$out/$name.stderr" "$1"
}

# Waits (up to 20 s) for `listening on http://127.0.0.1:PORT` in $1 and sets $base; on failure
# shows $2 (stderr) and exits. $3 names the command in messages.
wait_announced() {
  for _ in $(seq 1 200); do
    grep -q '^listening on ' "$1" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  base=$(sed -n 's/^listening on //p' "$1" | head -n 1)
  [ -n "$base" ] || { echo "$3 did not start:" >&2; cat "$2" >&2; exit 1; }
  case "$base" in
    http://127.0.0.1:*) ;;
    *) echo "refusing a non-loopback address: $base" >&2; exit 1 ;;
  esac
}

start_announcing() {
  "$@" >"$out/stdout" 2>"$out/stderr" &
  pid=$!
  wait_announced "$out/stdout" "$out/stderr" "$1"
}

# Installs wrk and jq (Debian packages) when missing, and checks curl is there: the load
# scripts need all three (jq reads the agent's and the demo's JSON).
need_load_tools() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v jq >/dev/null || missing+=(jq)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
}

# Readings of the started process ($pid) and its agent API ($base).
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
# Every series carries a worker="..." label, so match the name up to its label set.
samples_total() { curl -fsS --max-time 5 "$base/metrics" | awk '$1 ~ /^perfpilot_samples_total($|\{)/ {print $2}'; }
now() { date +%s.%N; }
