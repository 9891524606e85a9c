# Sourced by the scripts: start a command that announces `listening on http://ADDR` (the
# agent, or the demo service) on a loopback port, and stop it when the script exits.
#
#   . scripts/agent-lib.sh
#   start_announcing env RUST_LOG=warn ./target/debug/perfpilot run --listen 127.0.0.1:0
#   curl "$base/health"
#
# Sets $pid (the process), $base (its http://127.0.0.1:PORT) and $out (a scratch directory
# with its stdout and stderr, removed on exit).

out=$(mktemp -d)
pid=
stop_started() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$out"
}
trap stop_started EXIT

start_announcing() {
  "$@" >"$out/stdout" 2>"$out/stderr" &
  pid=$!
  for _ in $(seq 1 200); do
    grep -q '^listening on ' "$out/stdout" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  base=$(sed -n 's/^listening on //p' "$out/stdout" | head -n 1)
  [ -n "$base" ] || { echo "$1 did not start:" >&2; cat "$out/stderr" >&2; exit 1; }
  case "$base" in
    http://127.0.0.1:*) ;;
    *) echo "refusing a non-loopback address: $base" >&2; exit 1 ;;
  esac
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
samples_total() { curl -fsS --max-time 5 "$base/metrics" | awk '$1 == "perfpilot_samples_total" {print $2}'; }
now() { date +%s.%N; }
