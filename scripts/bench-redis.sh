#!/usr/bin/env bash
# A second real server: Redis from Debian's packages (redis-server, redis-tools) under its own
# load tool, kept within a 256 MiB RSS budget by examples/redis.toml (Redis's admin commands:
# CONFIG SET maxmemory, MEMORY PURGE), twice:
#   (a) alone: Redis with a safety cap of maxmemory ${REDIS_SAFETY_MAXMEMORY:-1gb}
#       (allkeys-lru), so the run is bounded; its RSS goes far past the budget;
#   (b) the same, with perfpilot as a sidecar: examples/redis.toml as shipped, only moved to
#       Redis's port; REDIS_RUNS times (default 1). With REDIS_CONFIG=plain, without its
#       `watch_interval` line: the plain ladder a user writes (signal, goal = 0.8,
#       limit = 1.0, ladder, a 500 ms interval; nothing else).
# The load: `redis-benchmark -t set -r 10000000 -d ${REDIS_VALUE_BYTES:-2048} -c 16 -P 8` for
# REDIS_SECONDS (first argument, default 30) under `timeout` (each SET a new key nearly
# always: the data grows until evicted). Throughput is Redis's own count of commands
# (total_commands_processed in INFO) over the load, so a killed benchmark still counts.
#
# Per run: RSS peak and final (VmRSS of redis-server, polled every 0.25 s), time above the
# budget (polls above it x 0.25 s), commands per second, Redis's used_memory and maxmemory at
# the end, and for (b) the agent's runs. Then whether (b) ended within the budget, and its
# throughput as a ratio of (a)'s.
#
# Loopback only, bounded: redis-benchmark runs under `timeout`, the poll loop at most
# 4 x (seconds + 30) rounds; Redis and the agent are stopped after each run and on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-${REDIS_SECONDS:-30}}
budget_mib=256
value_bytes=${REDIS_VALUE_BYTES:-2048}
safety=${REDIS_SAFETY_MAXMEMORY:-1gb}
config_kind=${REDIS_CONFIG:-example}
runs_b=${REDIS_RUNS:-1}
case "$config_kind" in example|plain) ;; *) echo "REDIS_CONFIG must be example or plain" >&2; exit 2 ;; esac
[[ "$runs_b" =~ ^[0-9]+$ && "$runs_b" -ge 1 && "$runs_b" -le 10 ]] || { echo "REDIS_RUNS must be 1..10" >&2; exit 2; }
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 5 ]] || { echo "usage: $0 [SECONDS >= 5]" >&2; exit 2; }

. scripts/agent-lib.sh
need_load_tools
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "installing redis-server and redis-tools (Debian packages)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi

cargo build --release --quiet --bin perfpilot
load_before=$(cut -d" " -f1-3 /proc/loadavg)

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
info_field() { redis-cli -p "$1" INFO "$2" | tr -d '\r' | awk -F: -v k="$3" '$1 == k {print $2}'; }

rows=()
runs_lines=()
# One run: $1 = label, $2 = 1 with the agent, $3 = a short key.
run() {
  local label=$1 with_agent=$2 key=$3 port
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --maxmemory "$safety" --maxmemory-policy allkeys-lru --dir "$out" >"$out/redis.log" 2>&1 &
  demo_pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$port" PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  redis-cli -p "$port" PING | grep -q PONG || { echo "redis-server did not start:" >&2; cat "$out/redis.log" >&2; exit 1; }
  local agent_base=
  if [ "$with_agent" = 1 ]; then
    sed -e "s/6379/$port/g" examples/redis.toml >"$out/redis.toml"
    [ "$config_kind" = plain ] && sed -i '/^watch_interval = /d' "$out/redis.toml"
    start_announcing env RUST_LOG=warn ./target/release/perfpilot run --config "$out/redis.toml" \
      --listen 127.0.0.1:0
    agent_base=$base
    sleep 2
  fi
  local cmds0 t0
  cmds0=$(info_field "$port" stats total_commands_processed)
  t0=$(date +%s.%N)
  timeout "$seconds" redis-benchmark -p "$port" -t set -r 10000000 -d "$value_bytes" -c 16 -P 8 \
    -n 100000000 -q >/dev/null 2>&1 &
  local bench_pid=$! rss peak=0 final=0 above=0 polls=0
  for _ in $(seq 1 $((4 * (seconds + 30)))); do
    kill -0 "$demo_pid" 2>/dev/null || { echo "redis-server died ($label)" >&2; exit 1; }
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$demo_pid/status")
    polls=$((polls + 1))
    [ "$rss" -gt "$peak" ] && peak=$rss
    [ "$rss" -gt $((budget_mib * 1024)) ] && above=$((above + 1))
    final=$rss
    kill -0 "$bench_pid" 2>/dev/null || break
    sleep 0.25
  done
  wait "$bench_pid" 2>/dev/null || true
  local t1 cmds1
  t1=$(date +%s.%N)
  cmds1=$(info_field "$port" stats total_commands_processed)
  sleep 1 # what stays after the load
  final=$(awk '/^VmRSS:/ {print $2}' "/proc/$demo_pid/status")
  local used maxmem
  used=$(info_field "$port" memory used_memory)
  maxmem=$(redis-cli -p "$port" CONFIG GET maxmemory | tail -n 1)
  local runs="—"
  if [ -n "$agent_base" ]; then
    local doc
    doc=$(curl -fsS --max-time 5 "$agent_base/performance-metrics")
    runs=$(jq -r '[.recentOptimizations[] | "\(.strategy)\(if .success then "" else " (failed)" end)"] | group_by(.) | map("\(length) \(.[0])") | join(", ") | if . == "" then "none" else . end' <<<"$doc")
    mapfile -t runs_lines < <(jq -r --arg t0 "$t0" '.recentOptimizations | sort_by(.id)[]
      | "- +\(.startedAt / 1000 - ($t0 | tonumber) | floor) s \(.strategy) at memory_usage \(.before * 100 | floor) % -> \((.after // 0) * 100 | floor) % (\(.reason))"' <<<"$doc")
    stop_pid "$pid"
    pid=
  fi
  stop_pid "$demo_pid"
  demo_pid=
  local rate
  rate=$(awk -v a="$cmds0" -v b="$cmds1" -v t0="$t0" -v t1="$t1" 'BEGIN {printf "%.0f", (b - a) / (t1 - t0)}')
  rows+=("$(awk -v l="$label" -v pk="$peak" -v fi="$final" -v ab="$above" -v rate="$rate" -v used="$used" \
      -v maxmem="$maxmem" -v runs="$runs" 'BEGIN {
    printf "| %s | %.0f / %.0f MiB | %.2f s | %d/s | %.0f MiB of maxmemory %.0f MiB | %s |\n",
      l, pk / 1024, fi / 1024, ab * 0.25, rate, used / 1048576, maxmem / 1048576, runs
  }')")
  eval "rate_$key=$rate final_$key=$final above_$key=$above peak_$key=$peak"
}

echo "run (a): redis-server alone, ${seconds} s of redis-benchmark SETs" >&2
run "(a) redis alone (maxmemory $safety)" 0 a
summary=()
for i in $(seq 1 "$runs_b"); do
  echo "run (b$i): redis-server + perfpilot sidecar (examples/redis.toml, $config_kind), ${seconds} s" >&2
  run "(b$i) redis + perfpilot ($config_kind)" 1 b
  summary+=("$(awk -v b="$budget_mib" -v i="$i" -v fb="$final_b" -v ra="$rate_a" -v rb="$rate_b" -v ab="$above_b" -v pkb="$peak_b" 'BEGIN {
    lim = b * 1024
    printf "- (b%d) with the agent: final RSS %.0f MiB (%s the budget), peak %.0f MiB (%.2fx), %.2f s above the budget; throughput %d / %d = %.2f of without",
      i, fb / 1024, (fb <= lim ? "within" : "over"), pkb / 1024, pkb / lim, ab * 0.25, rb, ra, (ra > 0 ? rb / ra : 0)
  }')")
done

echo
echo "Machine: $(nproc) cores, $(awk '/^model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), $(uname -r); $(redis-server --version | cut -d' ' -f1-3)"
echo "Load average before the runs: $load_before; after: $(cut -d" " -f1-3 /proc/loadavg)"
echo "Load: redis-benchmark -t set -r 10000000 -d $value_bytes -c 16 -P 8 for ${seconds} s; budget ${budget_mib} MiB of RSS"
echo
echo "| run | redis RSS peak / final | time above the budget | throughput (SET) | data at the end | optimization runs |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "The agent: examples/redis.toml $([ "$config_kind" = plain ] && echo "without watch_interval (the plain ladder)" || echo "as shipped")"
echo
echo "the last (b) run's optimizations, oldest first:"
[ "${#runs_lines[@]}" -gt 0 ] && printf '%s\n' "${runs_lines[@]}" || echo "- none"
echo
awk -v b="$budget_mib" -v fa="$final_a" 'BEGIN {
  printf "- (a) without the agent: final RSS %.0f MiB, %s the %d MiB budget\n", fa / 1024, (fa > b * 1024 ? "exceeds" : "within"), b
}'
printf '%s\n' "${summary[@]}"
