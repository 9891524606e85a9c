#!/usr/bin/env bash
# Where the armed fast watch's CPU goes, thread by thread: the release agent at 1 s with a
# memory budget whose watch is forced armed (`watch_interval = "20ms"`, the armed row of
# scripts/bench-overhead.sh), for SECONDS (first argument, else 60) after a 5 s warm-up. For each
# thread alive through the window: its runtime from /proc/<pid>/task/<tid>/schedstat (first
# field, ns), the times it ran (third field), its voluntary and involuntary context switches
# from /proc/<pid>/task/<tid>/status, and the runtime per run; then the process's total as a
# share of one core. Prints a markdown table and the load average at the start and end.
#
# BENCH_AGENT=PATH measures that binary instead of building target/release/perfpilot. Loopback
# only; the agent is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 5 ]] || { echo "usage: $0 [SECONDS >= 5]" >&2; exit 2; }
. scripts/agent-lib.sh
bench_agent
printf '[budgets.memory]\nsignal = "memory_usage"\ngoal = 0.8\nlimit = 0.95\nladder = ["memory-purge"]\nwatch_interval = "20ms"\n' >"$out/armed.toml"
start_announcing env RUST_LOG=warn "$agent" run --listen 127.0.0.1:0 --interval 1s --config "$out/armed.toml"
sleep 5
# One line per thread: tid, name, runtime ns, timeslices, voluntary, involuntary switches.
threads() {
  local task
  for task in /proc/"$pid"/task/*; do
    printf '%s %s %s %s %s\n' "${task##*/}" "$(tr ' ' '_' <"$task/comm")" \
      "$(cut -d' ' -f1,3 "$task/schedstat")" \
      "$(awk '/^voluntary_ctxt_switches/ {v = $2} /^nonvoluntary_ctxt_switches/ {n = $2} END {print v, n}' "$task/status")"
  done 2>/dev/null | LC_ALL=C sort
}
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
threads >"$out/before"
t0=$(now)
sleep "$seconds"
kill -0 "$pid" 2>/dev/null || { echo "the agent died" >&2; exit 1; }
threads >"$out/after"
t1=$(now)
echo "Agent: $agent, forced-armed watch, ${seconds} s; load average at the start $load_start, at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| thread | runtime | share of a core | runs | voluntary / involuntary switches | runtime per run |"
echo "|---|---|---|---|---|---|"
LC_ALL=C join "$out/before" "$out/after" | awk -v t="$(echo "$t1 - $t0" | bc)" '{
  ns = $8 - $3; runs = $9 - $4; total += ns
  printf "| %s %s | %.1f ms | %.4f %% | %d | %d / %d | %s |\n", $2, $1, ns / 1e6, ns / 1e9 / t * 100, runs, $10 - $5, $11 - $6, (runs ? sprintf("%.1f µs", ns / runs / 1e3) : "—")
} END { printf "| all | %.1f ms | %.4f %% over %.1f s | | | |\n", total / 1e6, total / 1e9 / t * 100, t }'
