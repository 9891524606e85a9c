#!/usr/bin/env bash
# What the flight recorder costs: the release agent idle at a 1 s and at a 100 ms interval
# (side by side), RssAnon and VmRSS read once the first block is sealed (65 s: the window
# holds a minute) and again once the window is full (recorder.window = 15 min, plus a block:
# FILL_SECONDS, default 970), and the change between them: the recorder's window, since the
# rest of an idle agent is flat by then. CPU: utime+stime over the fill / CLK_TCK. A third
# agent at 1 s with a state_dir records to disk: the bytes of its sealed segments (one a
# minute) per segment, scaled to an hour, and the time its writer thread took per segment
# (write, fsync, rename, directory fsync: its debug line). Then
# `GET /performance-metrics/history` of the whole window, plain and gzip: bytes and time
# (curl's time_total, median of 5), and RSS while 32 history requests run at once.
#
# --hour: instead, `GET /performance-metrics/history?since=1h` of an agent at 1 s whose
# state_dir holds an hour of recording (written by `examples/history_bench.rs` with the
# recorder's own writer, ending now): the last 15 minutes are in memory, the rest read from
# the segments on disk. Bytes and time (median of 5), plain and gzip, and the agent's VmRSS
# before and at its peak while each set of requests is served (read every 10 ms).
#
# Loopback only, bounded: the agents are stopped on exit; every curl has --max-time.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--hour" ]; then
  . scripts/agent-lib.sh
  command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
  [ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet --bin perfpilot
  bin=${BENCH_BIN:-./target/release/perfpilot}
  mkdir -p "$out/state"
  cargo run --quiet --example history_bench -- "$out/state" 1 >&2
  start_announcing env RUST_LOG=warn PERFPILOT_INTERVAL=1s PERFPILOT_STATE_DIR="$out/state" \
    PERFPILOT_STRATEGIES__INTERVAL_BACKOFF__ENABLED=false "$bin" run --listen 127.0.0.1:0
  sleep 5
  echo "Agent: $bin; machine: $(nproc) cores, $(awk '/^model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "| GET /performance-metrics/history?since=1h (1 s agent, 15 min in memory, 45 min from disk) | samples | bytes | median time (5) | VmRSS before | peak VmRSS while served |"
  echo "|---|---|---|---|---|---|"
  for enc in plain gzip; do
    args=()
    [ "$enc" = gzip ] && args=(-H 'Accept-Encoding: gzip')
    samples=$(curl -s --max-time 60 "$base/performance-metrics/history?since=1h" | grep -o '"t":' | wc -l)
    before=$(rss_kib)
    peak=$before
    (for _ in 1 2 3 4 5; do
      curl -s --max-time 60 "${args[@]}" -o /dev/null -w '%{size_download} %{time_total}\n' \
        "$base/performance-metrics/history?since=1h"
    done) >"$out/times" &
    requests=$!
    while kill -0 "$requests" 2>/dev/null; do
      now=$(rss_kib); [ "$now" -gt "$peak" ] && peak=$now
      sleep 0.01
    done
    wait "$requests"
    size=$(awk 'NR == 1 {print $1}' "$out/times")
    median=$(awk '{print $2}' "$out/times" | sort -n | sed -n 3p)
    echo "| $enc | $samples | $size | ${median} s | $before KiB | $peak KiB |"
  done
  exit 0
fi
fill=${1:-${FILL_SECONDS:-970}}
[[ "$fill" =~ ^[0-9]+$ && "$fill" -ge 70 ]] || { echo "usage: $0 [FILL_SECONDS >= 70]" >&2; exit 2; }
. scripts/agent-lib.sh
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
# SKIP_BUILD=1: measure the release binary already built.
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet --bin perfpilot
# BENCH_BIN: another build to measure (say so with the numbers; not PERFPILOT_*: the agent
# reads those as its configuration).
bin=${BENCH_BIN:-./target/release/perfpilot}

anon_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status"; }
vmrss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A pids bases
for interval in 1s 100ms; do
  start_announcing_as "agent-$interval" env RUST_LOG=warn PERFPILOT_INTERVAL="$interval" \
    PERFPILOT_STRATEGIES__INTERVAL_BACKOFF__ENABLED=false \
    "$bin" run --listen 127.0.0.1:0
  pids[$interval]=$pid
  bases[$interval]=$base
done
mkdir -p "$out/state"
start_announcing_as agent-disk env RUST_LOG="warn,perfpilot::recorder::store=debug" \
  PERFPILOT_INTERVAL=1s PERFPILOT_STATE_DIR="$out/state" \
  PERFPILOT_STRATEGIES__INTERVAL_BACKOFF__ENABLED=false "$bin" run --listen 127.0.0.1:0
sleep 65
declare -A anon1 rss1 ticks1
for interval in 1s 100ms; do
  anon1[$interval]=$(anon_kib "${pids[$interval]}")
  rss1[$interval]=$(vmrss_kib "${pids[$interval]}")
  ticks1[$interval]=$(ticks "${pids[$interval]}")
done
sleep $((fill - 65))
hz=$(getconf CLK_TCK)
echo "| interval | RssAnon at 65 s | RssAnon full | change (recorder) | VmRSS full | CPU over the fill | samples kept |"
echo "|---|---|---|---|---|---|---|"
for interval in 1s 100ms; do
  p=${pids[$interval]}
  anon=$(anon_kib "$p"); rss=$(vmrss_kib "$p"); t=$(ticks "$p")
  samples=$(curl -s --max-time 30 "${bases[$interval]}/performance-metrics/history?signals=memory_usage" | grep -o '"t":' | wc -l)
  cpu=$(awk -v d=$((t - ticks1[$interval])) -v hz="$hz" -v s=$((fill - 65)) 'BEGIN {printf "%.3f %%", 100 * d / hz / s}')
  printf '| %s | %s KiB | %s KiB | %+d KiB | %s KiB | %s | %s |\n' "$interval" "${anon1[$interval]}" "$anon" \
    $((anon - anon1[$interval])) "$rss" "$cpu" "$samples"
done

# The sealed segments only (the open block is in memory): each holds a minute at 1 s.
mapfile -t segments < <(find "$out/state/recording" -maxdepth 1 -name '*.seg' -size +0)
mapfile -t write_us < <(grep -o 'micros=[0-9]*' "$out/agent-disk.stderr" | cut -d= -f2 | sort -n)
echo
echo "| disk recording (1 s agent, state_dir) | segments | bytes on disk | per segment (a minute) | per hour (x 60) | segment write: median / max |"
echo "|---|---|---|---|---|---|"
if [ "${#segments[@]}" -gt 0 ] && [ "${#write_us[@]}" -gt 0 ]; then
  bytes=$(du -cb "${segments[@]}" | awk 'END {print $1}')
  per=$((bytes / ${#segments[@]}))
  median=${write_us[$(( ${#write_us[@]} / 2 ))]}
  echo "| $fill s | ${#segments[@]} | $bytes B | $per B | $((per * 60)) B ($(awk -v b=$((per * 60)) 'BEGIN {printf "%.1f", b / 1048576}') MiB) | ${median} µs / ${write_us[-1]} µs |"
else
  echo "| $fill s | no sealed segment or no write line in $out/agent-disk.stderr | | | | |"
fi

base=${bases[1s]}
p=${pids[1s]}
echo
echo "| GET /performance-metrics/history (whole window, 1 s agent) | bytes | median time |"
echo "|---|---|---|"
for enc in plain gzip; do
  args=()
  [ "$enc" = gzip ] && args=(-H 'Accept-Encoding: gzip')
  times=()
  for _ in 1 2 3 4 5; do
    line=$(curl -s --max-time 30 "${args[@]}" -o /dev/null -w '%{size_download} %{time_total}' "$base/performance-metrics/history")
    size=${line% *}
    times+=("${line#* }")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
  echo "| $enc | $size | ${median} s |"
done

echo
before=$(vmrss_kib "$p")
peak=$before
requests=()
for _ in $(seq 1 32); do
  curl -s --max-time 30 -o /dev/null "$base/performance-metrics/history" &
  requests+=($!)
done
for _ in $(seq 1 50); do
  now=$(vmrss_kib "$p"); [ "$now" -gt "$peak" ] && peak=$now
  sleep 0.02
done
# The requests only: a bare `wait` would wait for the agents too.
wait "${requests[@]}"
echo "| 32 concurrent history requests (4 served at once, the rest 503) | VmRSS before | peak VmRSS |"
echo "|---|---|---|"
echo "| 1 s agent | $before KiB | $peak KiB |"
