#!/usr/bin/env bash
# Threshold-only against predictive triggers on a steady leak: the demo streaming service
# (examples/streaming_service, release) with `--leak-mb-per-s ${LEAK_RATE:-16}` and no load,
# each run with a perfpilot sidecar for ${1:-${LEAK_SECONDS:-60}} s:
#   threshold-only: webhook POST /admin/sessions/drop {"fraction": 0.5} when memory_usage
#                   (RSS / 256 MiB budget) stays above 0.9 for 3 samples, cooldown 5 s;
#   predictive:     the same strategy, threshold, `for`, cooldown and 1 s interval, plus
#                   [trigger.predict] horizon 30 s, at 0.95, window 10: fire when the fitted
#                   trend reaches 95 % within 30 s.
# At 16 MiB/s the leak gains about 48 MiB in the three samples `for = 3` waits, more than
# the 26 MiB between the 0.9 threshold and the budget, so threshold-only overshoots.
#   budget:         [budgets.memory] goal 0.8, limit 1.0 (the 256 MiB budget), interval 1 s,
#                   ladder purge (POST /admin/purge: drops nothing) → drop-sessions (the same
#                   webhook, no trigger of its own), settle 1 s, calm 2, cooldown 5 s: the
#                   agent acts only above the goal, the cheap rung first, and learns that the
#                   purge does not help against a leak (skipped after 3 unhelpful runs).
# A build whose TriggerSpec has no `predict` refuses the second configuration (checked
# first with `perfpilot check-config`); that row then says so and the script goes on.
#
# Per run: the demo's peak VmRSS (polled from /proc every 0.25 s), the time it spent above
# the 256 MiB limit, the drops the agent made (perfpilot_optimizations_total), and the
# memory_usage each drop fired at (/performance-metrics).
#
# Loopback only, bounded: each run lasts SECONDS (4 polls a second, so 4 x SECONDS polls),
# and the demo and the agent are stopped after each run and on exit.
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

seconds=${1:-${LEAK_SECONDS:-60}}
rate=${LEAK_RATE:-16}
budget_mib=256
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 10 && "$seconds" -le 600 ]] ||
  { echo "usage: $0 [SECONDS, 10..600]" >&2; exit 2; }
[[ "$rate" =~ ^[0-9]+$ && "$rate" -ge 1 && "$rate" -le 256 ]] ||
  { echo "LEAK_RATE must be whole MiB/s, 1..256" >&2; exit 2; }

. scripts/agent-lib.sh
need_load_tools

cargo build --release --quiet --bin perfpilot --example streaming_service

# The agent's configuration: $1 = the demo's base URL, $2 = 1 to add the predict table,
# 2 for the budget.
write_config() {
  if [ "$2" = 2 ]; then
    # The budget configuration is one file (also the replay's leak fixture and bench).
    sed "s|{demo}|$1|g" scripts/leak-budget.toml
    return
  fi
  cat <<EOF
interval = "1s"
memory_budget = "${budget_mib}MiB"

[strategies.webhook.drop-sessions]
url = "$1/admin/sessions/drop"
body = { fraction = 0.5 }
[strategies.webhook.drop-sessions.trigger]
signal = "memory_usage"
above = 0.9
for = 3
cooldown = "5s"
EOF
  if [ "$2" = 1 ]; then
    cat <<'EOF'
[strategies.webhook.drop-sessions.trigger.predict]
horizon = "30s"
at = 0.95
window = 10
EOF
  fi
}

rows=()
# One run: $1 = label, $2 = 1 for the predictive configuration, $3 = a name for the results.
run() {
  local label=$1 predictive=$2 name=$3
  start_announcing env RUST_LOG=warn ./target/release/examples/streaming_service \
    --listen 127.0.0.1:0 --leak-mb-per-s "$rate"
  demo_pid=$pid
  local demo_base=$base
  mv "$out/stdout" "$out/demo-stdout"
  pid=
  write_config "$demo_base" "$predictive" >"$out/leak.toml"
  if ! ./target/release/perfpilot check-config --config "$out/leak.toml" >/dev/null 2>"$out/check.txt"; then
    if grep -q 'trigger.predict: unknown key\|budgets' "$out/check.txt"; then
      rows+=("| $label | not available in this build | | | |")
      eval "peak_$name= above_$name="
      stop_pid "$demo_pid"
      demo_pid=
      return
    fi
    echo "the $label configuration is invalid:" >&2
    cat "$out/check.txt" >&2
    exit 1
  fi
  start_announcing env RUST_LOG=warn ./target/release/perfpilot run --config "$out/leak.toml" \
    --listen 127.0.0.1:0 --target-pid "$demo_pid"
  local agent_base=$base

  local rss peak=0 above=0 limit_kib=$((budget_mib * 1024))
  for _ in $(seq 1 $((4 * seconds))); do
    kill -0 "$demo_pid" 2>/dev/null || { echo "the demo died ($label)" >&2; exit 1; }
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$demo_pid/status")
    [ "$rss" -gt "$peak" ] && peak=$rss
    [ "$rss" -gt "$limit_kib" ] && above=$((above + 1))
    sleep 0.25
  done

  local drops fired
  drops=$(curl -fsS --max-time 5 "$agent_base/metrics" |
    awk '/^perfpilot_optimizations_total\{/ && /drop-sessions/ {n += $NF} END {printf "%d", n}')
  # "before" is the memory_usage each drop fired at (oldest first in the document).
  fired=$(curl -fsS --max-time 5 "$agent_base/performance-metrics" |
    jq -r --argjson b "$budget_mib" '[.recentOptimizations[] | select(.strategy == "drop-sessions")
      | .before * $b | round] | if length == 0 then "none" else map(tostring) | join(", ") end')
  local purges
  purges=$(curl -fsS --max-time 5 "$agent_base/metrics" |
    awk '/^perfpilot_optimizations_total\{/ && /strategy="purge"/ {n += $NF} END {printf "%d", n}')
  [ "$purges" -gt 0 ] && fired="$fired (and $purges purges, which drop nothing)"
  stop_pid "$pid"
  pid=
  stop_pid "$demo_pid"
  demo_pid=
  rows+=("$(awk -v l="$label" -v pk="$peak" -v ab="$above" -v d="$drops" -v f="$fired" 'BEGIN {
    printf "| %s | %.0f MiB | %.2f s | %d | %s |\n", l, pk / 1024, ab / 4, d, f
  }')")
  eval "peak_$name=$peak above_$name=$above"
}

echo "run 1: threshold-only, ${seconds} s" >&2
run "threshold-only (above 0.9, for 3)" 0 threshold
echo "run 2: predictive, ${seconds} s" >&2
run "predictive (+ horizon 30 s, at 0.95, window 10)" 1 predictive

echo "run 3: budget, ${seconds} s" >&2
run "budget (goal 0.8, limit 1.0, purge → drop-sessions)" 2 budget

echo
echo "Machine: $(nproc) cores, $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Leak: ${rate} MiB/s of session state, no load; budget ${budget_mib} MiB; agent interval 1 s;"
echo "strategy: POST /admin/sessions/drop {\"fraction\": 0.5}, memory_usage above 0.9, for 3, cooldown 5 s"
echo
echo "| config | peak RSS | time above ${budget_mib} MiB | drops | RSS at each drop (MiB, from memory_usage) |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
limit_kib=$((budget_mib * 1024))
awk -v lim="$limit_kib" -v b="$budget_mib" -v pt="$peak_threshold" -v at="$above_threshold" 'BEGIN {
  printf "- threshold-only: peak %.0f MiB, %s the %d MiB limit (%.2f s above)\n", pt / 1024,
    (pt > lim ? "overshoots" : "stays under"), b, at / 4
}'
if [ -z "$peak_predictive" ]; then
  echo "- predictive: not measured (this build has no [trigger.predict])"
else
  awk -v lim="$limit_kib" -v b="$budget_mib" -v pp="$peak_predictive" -v ap="$above_predictive" \
      -v pt="$peak_threshold" 'BEGIN {
    printf "- predictive: peak %.0f MiB, %s the %d MiB limit (%.2f s above)\n", pp / 1024,
      (pp > lim ? "overshoots" : "stays under"), b, ap / 4
    printf "- predictive under the limit where threshold-only overshoots: %s\n",
      (pp <= lim && pt > lim ? "met" : "not met")
  }'
fi
if [ -z "$peak_budget" ]; then
  echo "- budget: not measured (this build has no [budgets])"
else
  awk -v lim="$limit_kib" -v b="$budget_mib" -v pb="$peak_budget" -v ab="$above_budget" 'BEGIN {
    printf "- budget: peak %.0f MiB, %s the %d MiB limit (%.2f s above)\n", pb / 1024,
      (pb > lim ? "overshoots" : "stays under"), b, ab / 4
  }'
fi
