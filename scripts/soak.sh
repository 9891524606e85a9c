#!/usr/bin/env bash
# Soak: the release agent sampling every 50 ms under a steady wrk load on
# /performance-metrics, for SECONDS (first argument, else $SOAK_SECONDS, else 600).
#
# Prints RSS at start, end and max (sampled from /proc every 10 s), wrk's requests/s, latency
# and errors (non-2xx, socket errors), and the sampling cadence: perfpilot_samples_total
# read from /metrics at start and end against elapsed / interval.
#
# Loopback only, bounded: wrk runs for -d SECONDS under `timeout`, the RSS loop for at most
# SECONDS/10 + 6 rounds, and the agent is stopped on exit. interval-backoff is turned off so
# that the interval stays 50 ms under the load (SOAK_KEEP_BACKOFF=1 keeps it on).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-${SOAK_SECONDS:-600}}
interval_ms=50
connections=${SOAK_CONNECTIONS:-8}
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 10 ]] || { echo "usage: $0 [SECONDS >= 10]" >&2; exit 2; }


. scripts/agent-lib.sh
need_load_tools

cargo build --release --quiet --bin perfpilot

env_args=()
[ "${SOAK_KEEP_BACKOFF:-0}" = 1 ] || env_args+=(PERFPILOT_STRATEGIES__INTERVAL_BACKOFF__ENABLED=false)
start_announcing env "${env_args[@]}" RUST_LOG=warn ./target/release/perfpilot run \
  --listen 127.0.0.1:0 --interval "${interval_ms}ms"


sleep 1 # let the first samples and allocations settle
samples_start=$(samples_total)
t_start=$(now)
cpu_start=$(cpu_ticks)
rss_start=$(rss_kib)
rss_max=$rss_start
rss_samples=1

timeout $((seconds + 30)) wrk -t1 -c"$connections" -d"${seconds}s" --latency "$base/performance-metrics" >"$out/wrk.txt" 2>&1 &
wrk_pid=$!
for _ in $(seq 1 $((seconds / 10 + 6))); do
  kill -0 "$wrk_pid" 2>/dev/null || break
  sleep 10
  kill -0 "$pid" 2>/dev/null || { echo "the agent died" >&2; exit 1; }
  rss=$(rss_kib)
  rss_samples=$((rss_samples + 1))
  [ "$rss" -gt "$rss_max" ] && rss_max=$rss
done
wait "$wrk_pid" || { echo "wrk failed:" >&2; cat "$out/wrk.txt" >&2; exit 1; }

samples_end=$(samples_total)
t_end=$(now)
cpu_end=$(cpu_ticks)
rss_end=$(rss_kib)
[ "$rss_end" -gt "$rss_max" ] && rss_max=$rss_end
interval_now=$(curl -fsS --max-time 5 "$base/performance-metrics" | sed -n 's/.*"interval":\([0-9]*\).*/\1/p')
health=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/health")

rps=$(awk '/^Requests\/sec:/ {print $2}' "$out/wrk.txt")
requests=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$out/wrk.txt")
socket_errors=$(sed -n 's/.*Socket errors: \(.*\)/\1/p' "$out/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$out/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$out/wrk.txt")
hz=$(getconf CLK_TCK)

awk -v s0="$samples_start" -v s1="$samples_end" -v t0="$t_start" -v t1="$t_end" \
    -v iv="$interval_ms" -v r0="$rss_start" -v r1="$rss_end" -v rmax="$rss_max" -v n="$rss_samples" \
    -v c0="$cpu_start" -v c1="$cpu_end" -v hz="$hz" -v secs="$seconds" -v conns="$connections" \
    -v rps="$rps" -v req="$requests" -v non2xx="${non2xx:-0}" -v sock="${socket_errors:-none}" \
    -v p50="$p50" -v p99="$p99" -v ivnow="$interval_now" -v health="$health" 'BEGIN {
  elapsed = t1 - t0
  expected = elapsed * 1000 / iv
  got = s1 - s0
  printf "| soak (%d s, interval %d ms, wrk -t1 -c%d on /performance-metrics) | |\n", secs, iv, conns
  printf "|---|---|\n"
  printf "| RSS start / end / max | %.1f / %.1f / %.1f MiB (%d readings, every 10 s) |\n", r0/1024, r1/1024, rmax/1024, n
  printf "| RSS growth end - start | %+d KiB |\n", r1 - r0
  printf "| wrk requests, requests/s | %s, %s |\n", req, rps
  printf "| wrk latency p50 / p99 | %s / %s |\n", p50, p99
  printf "| non-2xx responses | %d |\n", non2xx
  printf "| socket errors | %s |\n", sock
  printf "| samples taken / expected | %d / %.0f over %.1f s (ratio %.3f) |\n", got, expected, elapsed, got / expected
  printf "| mean sample spacing | %.2f ms (interval in force at end: %s ms) |\n", elapsed * 1000 / got, ivnow
  printf "| agent CPU (incl. serving the load) | %.1f %% of one core |\n", (c1 - c0) / hz / elapsed * 100
  printf "| /health after the soak | %s |\n", health
}'
