#!/usr/bin/env bash
# What the agent saves: the demo streaming service (examples/streaming_service, release) under
# a bounded range-request load, three times:
#   (a) alone, --cache-mb 64: a cache far below the budget, the baseline p99;
#   (b) alone, --cache-mb 2048: the growing cache takes RSS past the 256 MiB budget;
#   (c) as (b), with perfpilot as a sidecar: examples/sidecar.toml (256 MiB budget, 500 ms
#       interval, a [budgets.memory] ladder purge → soft trim → hard trim → drop sessions
#       with goal 80 % and limit 100 %) rewritten to the demo's port.
# The load: `wrk -t2 -c16 -d${EFFECT_SECONDS:-30}s` (first argument wins) with a Lua script that
# asks for `Range: bytes=0-2097151` of /stream/id-<random 0..5000>, so nearly every request
# is a new 2 MiB chunk for the cache.
#
# Per run: peak and final RSS of the demo (the peak is the kernel's VmHWM at the end of the
# load, so a peak between two polls counts; VmRSS polled every 0.5 s gives the time), wrk
# p50/p95/p99 and errors, and for (c) the optimization runs in the agent's
# /performance-metrics. Then whether (c) kept RSS within the budget (peak after the first trim,
# and final) and p99 within 1.2x of (a). After the table: the demo's cache and jemalloc state
# at the end of each run (/stats), and what each of (c)'s trims did (the hook's answer: chunks
# and bytes freed, the cache capacity before and after, RSS before and after the purge).
#
# Loopback only, bounded: wrk runs for -d under `timeout`, the poll loop for at most
# 2 x (seconds + 40) rounds, and the demo and the agent are stopped after each run and on exit.
set -euo pipefail
# --check (first argument): run as usual, then exit 1 if any budget line says "not met"
# (scripts/bench-check.sh; not part of CI: timings depend on the machine).
if [ "${1:-}" = "--check" ]; then
  shift
  . "$(dirname "$0")/bench-check.sh"
  run_checked "$0" "$@"
  exit $?
fi
cd "$(dirname "$0")/.."

seconds=${1:-${EFFECT_SECONDS:-30}}
budget_mib=256
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 5 ]] || { echo "usage: $0 [SECONDS >= 5]" >&2; exit 2; }

. scripts/agent-lib.sh
need_load_tools

cargo build --release --quiet --bin perfpilot --example streaming_service
load_before=$(cut -d" " -f1-3 /proc/loadavg)

write_range_load_lua "$out/ranges.lua"

rows=()
demo_states=()
trim_lines=()
rung_lines=()
mib() { awk -v b="${1:-0}" 'BEGIN {printf "%.0f", b / 1048576}'; }
# One run: $1 = label, $2 = --cache-mb, $3 = 1 to run the agent beside the demo.
run() {
  local label=$1 cache_mb=$2 with_agent=$3
  start_announcing env RUST_LOG=warn ./target/release/examples/streaming_service \
    --listen 127.0.0.1:0 --cache-mb "$cache_mb"
  demo_pid=$pid
  local demo_base=$base demo_port=${base##*:}
  mv "$out/stdout" "$out/demo-stdout" # the demo keeps writing there; start_announcing reuses stdout
  pid=
  local agent_base=
  if [ "$with_agent" = 1 ]; then
    sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$demo_port/g" -e "s/^port = 8080$/port = $demo_port/" \
      examples/sidecar.toml >"$out/sidecar.toml"
    grep -q "port = $demo_port" "$out/sidecar.toml" || { echo "could not rewrite the sidecar config" >&2; exit 1; }
    start_announcing env RUST_LOG=warn ./target/release/perfpilot run --config "$out/sidecar.toml" \
      --listen 127.0.0.1:0
    agent_base=$base
    sleep 2 # the agent finds the target and takes its first samples
  fi

  timeout $((seconds + 30)) wrk -t2 -c16 -d"${seconds}s" --timeout 10s --latency \
    -s "$out/ranges.lua" "$demo_base/" >"$out/wrk.txt" 2>&1 &
  local wrk_pid=$! rss peak=0 peak_at= hwm=0 final=0 peak_after_trim=0 peak_after_trim_at= trimmed=0 trim_at= t0 polls=0
  t0=$(date +%s.%N)
  for _ in $(seq 1 $((2 * (seconds + 40)))); do
    kill -0 "$demo_pid" 2>/dev/null || { echo "the demo died ($label)" >&2; exit 1; }
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$demo_pid/status")
    polls=$((polls + 1))
    if [ "$rss" -gt "$peak" ]; then
      peak=$rss
      peak_at=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    fi
    final=$rss
    if [ -n "$agent_base" ]; then
      if [ "$trimmed" = 0 ] && curl -fsS --max-time 2 "$agent_base/performance-metrics" 2>/dev/null |
          jq -e '[.recentOptimizations[] | select(.strategy | startswith("trim-demo-cache"))] | length > 0' >/dev/null; then
        trimmed=1
        trim_at=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
      elif [ "$trimmed" = 1 ] && [ "$rss" -gt "$peak_after_trim" ]; then
        peak_after_trim=$rss
        peak_after_trim_at=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
      fi
    fi
    kill -0 "$wrk_pid" 2>/dev/null || break
    sleep 0.5
  done
  wait "$wrk_pid" || { echo "wrk failed ($label):" >&2; cat "$out/wrk.txt" >&2; exit 1; }
  # The kernel's high-water mark of the demo's RSS: the true peak, also between two polls
  # (the demo starts fresh for each run, so it is the peak of this run's load).
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$demo_pid/status")
  [ "$hwm" -gt "$peak" ] || hwm=$peak

  local state
  state=$(curl -fsS --max-time 5 "$demo_base/stats" | jq -r '[.cache_weighted_bytes, .cache_capacity_bytes,
      .cache_max_capacity_bytes, .cache_entries, .jemalloc.dirty_bytes, .jemalloc.muzzy_bytes,
      .jemalloc.dirty_decay_ms] | map(. // 0) | @tsv')
  read -r cached cap max entries dirty muzzy decay <<<"$state"
  demo_states+=("- $label: cache $(mib "$cached") MiB ($entries chunks) of capacity $(mib "$cap") MiB (max $(mib "$max")); jemalloc dirty $(mib "$dirty") MiB, muzzy $(mib "$muzzy") MiB (dirty_decay_ms $decay)")

  local runs="—" lat errors reqs
  if [ -n "$agent_base" ]; then
    local doc
    doc=$(curl -fsS --max-time 5 "$agent_base/performance-metrics")
    local total ok
    # Only the records count (budgets[] names the same strategies as rungs).
    total=$(jq '[.recentOptimizations[] | select(.strategy | startswith("trim-demo-cache"))] | length' <<<"$doc")
    ok=$(jq '[.recentOptimizations[] | select((.strategy | startswith("trim-demo-cache")) and .success)] | length' <<<"$doc")
    runs="$total trims ($(jq -r '.recentOptimizations[].strategy' <<<"$doc" |
      sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')); first ${trim_at:-never} s into the load"
    [ "$ok" -gt 0 ] || [ "$total" = 0 ] || runs="$runs; none succeeded"
    # Oldest first: when, which, at what memory_usage, and the hook's answer.
    mapfile -t trim_lines < <(jq -r --arg t0 "$t0" '[.recentOptimizations[]
        | select(.strategy | startswith("trim-demo-cache"))] | sort_by(.id)[]
        | (.result.report.response // {}) as $r
        | "- +\(.startedAt / 1000 - ($t0 | tonumber) | floor) s \(.strategy) at memory_usage \(.before * 100 | floor) %: "
          + (if $r.entries_removed == null then "no answer (success \(.success))" else
             "freed \($r.entries_removed) chunks, \($r.bytes_freed / 1048576 | floor) MiB; capacity \($r.capacity_before_bytes / 1048576 | floor) -> \($r.capacity_after_bytes / 1048576 | floor) MiB; RSS \(($r.rss_before_bytes // 0) / 1048576 | floor) -> \(($r.rss_after_bytes // 0) / 1048576 | floor) MiB" end)' <<<"$doc")
    # Every run, oldest first: when (ms from the start of the load), which rung, memory_usage
    # before and after, and why the budget chose it.
    mapfile -t rung_lines < <(jq -r --arg t0 "$t0" '.recentOptimizations | sort_by(.id)[]
      | "- +\((.startedAt / 1000 - ($t0 | tonumber)) * 1000 | floor) ms \(.strategy): memory_usage \((.before // 0) * 100 | floor) % -> \((.after // 0) * 100 | floor) %, \(.durationMs | floor) ms; \(.budget.why // .reason)"' <<<"$doc")
    # The budget's own account: time above goal and limit, and each rung's runs and help.
    budget_line=$(jq -r '.fastWatch as $w | .budgets[]? | "- budget \(.name): \(.episodes) episodes, \(.exhaustions) exhausted; \(.secondsAboveGoal.total * 10 | round / 10) s above goal, \(.secondsAboveLimit.total * 10 | round / 10) s above limit (as the agent sampled it); rungs: " + ([.rungs[] | "\(.strategy) \(.runs) runs, \(.helped)/\(.judged) helped"] | join("; ")) + "; fast watch: \($w.wakes // "none") wakes, \($w.reads // 0) reads"' <<<"$doc")
    stop_pid "$pid"
    pid=
  fi
  stop_pid "$demo_pid"
  demo_pid=

  lat=$(awk '$1 == "LAT_US" {print $2, $3, $4, $5}' "$out/wrk.txt")
  errors=$(sed -n 's/^ERRORS //p' "$out/wrk.txt")
  reqs=$(awk '$1 == "REQUESTS" {print $2, $3}' "$out/wrk.txt")
  read -r p50 p95 p99 pmax <<<"$lat"
  read -r nreq rps <<<"$reqs"
  rows+=("$(awk -v l="$label" -v pk="$peak" -v pkat="$peak_at" -v hwm="$hwm" -v fi="$final" -v pat="$peak_after_trim" -v pat_at="$peak_after_trim_at" -v tr="$trimmed" \
      -v p50="$p50" -v p95="$p95" -v p99="$p99" -v pmax="$pmax" -v e="$errors" -v n="$nreq" \
      -v rps="$rps" -v runs="$runs" -v polls="$polls" 'BEGIN {
    after = tr ? sprintf(" (after the first trim: %.0f, %s s into the load)", pat / 1024, pat_at) : ""
    printf "| %s | %.0f (VmHWM; polled %.0f at %s s)%s / %.0f MiB | %.1f / %.1f / %.1f ms (max %.0f) | %d, %s/s | %s | %s |\n",
      l, hwm / 1024, pk / 1024, pkat, after, fi / 1024, p50 / 1000, p95 / 1000, p99 / 1000, pmax / 1000, n, rps, e, runs
  }')")
  eval "p99_$4=$p99 peak_$4=$hwm final_$4=$final pat_$4=$peak_after_trim trimmed_$4=$trimmed"
}

echo "run (a): cache 64 MiB, alone, ${seconds} s" >&2
run "(a) alone, --cache-mb 64" 64 0 a
echo "run (b): cache 2048 MiB, alone, ${seconds} s" >&2
run "(b) alone, --cache-mb 2048" 2048 0 b
echo "run (c): cache 2048 MiB, perfpilot sidecar, ${seconds} s" >&2
run "(c) --cache-mb 2048 + perfpilot sidecar" 2048 1 c

echo
echo "Machine: $(nproc) cores, $(awk '/^model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), $(uname -r)"
echo "Load average before the runs: $load_before; after: $(cut -d" " -f1-3 /proc/loadavg)"
echo "Load: wrk -t2 -c16 -d${seconds}s --timeout 10s, Range: bytes=0-2097151 on /stream/id-<0..5000>; budget ${budget_mib} MiB"
echo
echo "| run | demo RSS peak / final | p50 / p95 / p99 | requests, rate | errors | optimization runs |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "The demo at the end of each run:"
printf '%s\n' "${demo_states[@]}"
echo
[ -n "${budget_line:-}" ] && { echo "$budget_line"; echo; }
echo "(c)'s runs, oldest first:"
[ "${#rung_lines[@]}" -gt 0 ] && printf '%s\n' "${rung_lines[@]}" || echo "- none"
echo
echo "(c)'s trims, oldest first (the demo's answers):"
[ "${#trim_lines[@]}" -gt 0 ] && printf '%s\n' "${trim_lines[@]}" || echo "- none"
echo
awk -v b="$budget_mib" -v pa="$p99_a" -v pc="$p99_c" -v pkb="$peak_b" -v pkc="$peak_c" \
    -v fc="$final_c" -v patc="$pat_c" -v trc="$trimmed_c" 'BEGIN {
  lim = b * 1024
  printf "- (b) without the agent: peak %.0f MiB, %s the %d MiB budget\n", pkb / 1024, (pkb > lim ? "exceeds" : "stays within"), b
  if (!trc) {
    printf "- (c) with the agent: no trim ran; peak %.0f MiB, final %.0f MiB: RSS within the budget: not met\n", pkc / 1024, fc / 1024
  } else {
    printf "- (c) with the agent: peak after the first trim %.0f MiB (%s), final %.0f MiB (%s): RSS within the budget: %s\n",
      patc / 1024, (patc <= lim ? "within" : "over"), fc / 1024, (fc <= lim ? "within" : "over"),
      (patc <= lim && fc <= lim ? "met" : "not met")
  }
  printf "- (c) peak from the start of the load %.0f MiB = %.2fx the budget: within 1.25x: %s\n", pkc / 1024, pkc / lim, (pkc <= 1.25 * lim ? "met" : "not met")
  printf "- p99 (c) / p99 (a) = %.1f / %.1f ms = %.2fx: within 1.2x: %s\n", pc / 1000, pa / 1000, pc / pa, (pc <= 1.2 * pa ? "met" : "not met")
}'
