#!/usr/bin/env bash
# Inside a real memory limit: the demo streaming service (examples/streaming_service, release)
# with --cache-mb 2048 in a memory cgroup this script makes itself, limited to
# ${OOM_LIMIT_MIB:-300} MiB (cgroup v1 memory.limit_in_bytes where the memory controller is
# v1, else v2 memory.max), under the random 2 MiB range load of bench-effect.sh, twice:
#   (a) alone: the cache fills past the limit and the kernel OOM-kills the demo;
#   (b) with perfpilot as a sidecar, OOM_RUNS times (default 1): examples/sidecar.toml as
#       shipped, only moved to the demo's port and WITHOUT its memory_budget (so the limit is
#       the cgroup's, read by the agent, and memory_usage is the cgroup's working set), as
#       docs/sidecar.md tells a container user to do. With OOM_CONFIG=minimal, the budget a
#       user writes by hand instead: the target, the demo's hooks, and [budgets.memory] with
#       only signal, goal = 0.8, limit = 1.0 and ladder. The agent derives its margins from
#       the rise it sees ([tuning] reaction = "adaptive", the default): nothing is tuned here.
# OOM_STRESS=1 runs `stress-ng --cpu 2` beside every run (a busy machine); OOM_ALONE=0 skips
# run (a).
# Per run: OOM kills counted by the cgroup (memory.oom_control / memory.events), whether the
# demo was alive at the end, the cgroup's peak and final usage, wrk's requests, p99 and
# errors, and for (b) the trims and the fast watch's wakes. Goal: 0 kills with the agent, at
# least one without.
#
# Needs root (it makes the cgroup). Loopback only, bounded: wrk runs for -d under `timeout`,
# the poll loop at most 2 x (seconds + 40) rounds; the demo, the agent and the cgroup are
# removed after each run and on exit.
#
#   scripts/bench-oom.sh [SECONDS]     # default OOM_SECONDS or 20
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-${OOM_SECONDS:-20}}
limit_mib=${OOM_LIMIT_MIB:-300}
config_kind=${OOM_CONFIG:-sidecar}
runs_b=${OOM_RUNS:-1}
stress=${OOM_STRESS:-0}
alone=${OOM_ALONE:-1}
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 5 ]] || { echo "usage: $0 [SECONDS >= 5]" >&2; exit 2; }
[[ "$runs_b" =~ ^[0-9]+$ && "$runs_b" -ge 1 && "$runs_b" -le 10 ]] || { echo "OOM_RUNS must be 1..10" >&2; exit 2; }
case "$config_kind" in sidecar|minimal) ;; *) echo "OOM_CONFIG must be sidecar or minimal" >&2; exit 2 ;; esac
if [ "$stress" = 1 ] && ! command -v stress-ng >/dev/null; then
  echo "OOM_STRESS=1 needs stress-ng (apt-get install stress-ng)" >&2; exit 2
fi
[ "$(id -u)" = 0 ] || { echo "bench-oom.sh makes a memory cgroup: run it as root" >&2; exit 2; }

. scripts/agent-lib.sh
need_load_tools

cargo build --release --quiet --bin perfpilot --example streaming_service
stress_pid=
if [ "$stress" = 1 ]; then
  timeout $(((seconds + 60) * (runs_b + 1))) stress-ng --cpu 2 --quiet &
  stress_pid=$!
  started_pids+=("$stress_pid") # stopped with the rest on exit
fi
load_before=$(cut -d" " -f1-3 /proc/loadavg)

# The minimal budget a user writes by hand: the target, the demo's hooks as rungs, and
# signal, goal, limit and ladder; every other number the agent's default.
write_minimal_config() {
  cat >"$1" <<'TOML'
interval = "500ms"
[target]
port = 8080
[budgets.memory]
signal = "memory_usage"
goal = 0.8
limit = 1.0
ladder = ["purge-demo", "trim-demo-cache", "trim-demo-cache-hard", "drop-demo-sessions"]
[strategies.webhook.purge-demo]
url = "http://127.0.0.1:8080/admin/purge"
[strategies.webhook.trim-demo-cache]
url = "http://127.0.0.1:8080/admin/cache/trim"
body = { fraction = 0.25 }
[strategies.webhook.trim-demo-cache-hard]
url = "http://127.0.0.1:8080/admin/cache/trim"
body = { fraction = 0.75 }
[strategies.webhook.drop-demo-sessions]
url = "http://127.0.0.1:8080/admin/sessions/drop"
body = { fraction = 0.5 }
TOML
}
write_range_load_lua "$out/ranges.lua"

rows=()
run_lines=()
mib() { awk -v b="${1:-0}" 'BEGIN {printf "%.0f", b / 1048576}'; }
# One run: $1 = label, $2 = 1 to run the agent beside the demo, $3 = a short key.
run() {
  local label=$1 with_agent=$2 key=$3
  make_memory_cgroup "perfpilot-bench-oom-$$-$key" $((limit_mib * 1048576))
  local cg=$cg_dir
  # The shell writes its own pid into the cgroup, then becomes the demo.
  start_announcing sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
    env RUST_LOG=warn ./target/release/examples/streaming_service --listen 127.0.0.1:0 --cache-mb 2048
  demo_pid=$pid
  local demo_base=$base demo_port=${base##*:}
  grep -qx "$demo_pid" "$cg/cgroup.procs" || { echo "the demo is not in $cg" >&2; exit 1; }
  mv "$out/stdout" "$out/demo-stdout"
  pid=
  local agent_base=
  if [ "$with_agent" = 1 ]; then
    # Only the port, and no memory_budget (the cgroup's limit is the limit).
    local source=examples/sidecar.toml
    if [ "$config_kind" = minimal ]; then
      write_minimal_config "$out/minimal.toml"
      source=$out/minimal.toml
    fi
    sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$demo_port/g" -e "s/^port = 8080$/port = $demo_port/" \
      -e '/^memory_budget = /d' "$source" >"$out/sidecar.toml"
    grep -q "port = $demo_port" "$out/sidecar.toml" && ! grep -q '^memory_budget' "$out/sidecar.toml" ||
      { echo "could not move the sidecar config to port $demo_port" >&2; exit 1; }
    ./target/release/perfpilot check-config --config "$out/sidecar.toml" >/dev/null ||
      { echo "the rewritten sidecar config is refused" >&2; exit 1; }
    start_announcing env RUST_LOG=warn ./target/release/perfpilot run --config "$out/sidecar.toml" \
      --listen 127.0.0.1:0
    agent_base=$base
    sleep 2 # the agent finds the target and takes its first samples
    local doc
    doc=$(curl -fsS --max-time 5 "$agent_base/performance-metrics")
    jq -e '.currentMetrics.memoryLimitSource == "cgroup"' <<<"$doc" >/dev/null ||
      { echo "the agent does not read the cgroup's limit: $(jq -c '.currentMetrics | {memoryLimitBytes, memoryLimitSource}' <<<"$doc")" >&2; exit 1; }
  fi

  timeout $((seconds + 30)) wrk -t2 -c16 -d"${seconds}s" --timeout 10s --latency \
    -s "$out/ranges.lua" "$demo_base/" >"$out/wrk.txt" 2>&1 &
  local wrk_pid=$! died_at= t0
  t0=$(date +%s.%N)
  for _ in $(seq 1 $((2 * (seconds + 40)))); do
    if [ -z "$died_at" ] && ! kill -0 "$demo_pid" 2>/dev/null; then
      died_at=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    fi
    kill -0 "$wrk_pid" 2>/dev/null || break
    sleep 0.5
  done
  wait "$wrk_pid" || true
  local kills peak final alive=yes
  kills=$(cgroup_oom_kills "$cg")
  peak=$(cgroup_peak "$cg")
  final=$(cgroup_usage "$cg")
  kill -0 "$demo_pid" 2>/dev/null || alive="no (gone ${died_at:-?} s into the load)"

  local runs="—" wakes="—" agent_kills="—"
  if [ -n "$agent_base" ]; then
    local doc
    doc=$(curl -fsS --max-time 5 "$agent_base/performance-metrics")
    runs=$(jq -r '[.recentOptimizations[].strategy] | group_by(.) | map("\(length) \(.[0])") | join(", ") | if . == "" then "none" else . end' <<<"$doc")
    wakes=$(jq -r '.fastWatch.wakes // "no fast watch"' <<<"$doc")
    agent_kills=$(jq -r '.currentMetrics.oomKills // "—"' <<<"$doc")
    # The budget's own account: episodes, time above goal and limit, each rung's runs.
    budget_line=$(jq -r '.budgets[]? | "- budget \(.name) (goal \(.goal), held \(.effectiveGoal * 1000 | round / 1000), limit \(.limit), kill line: \(.killLine)): \(.episodes) episodes, \(.exhaustions) exhausted; \(.secondsAboveGoal.total * 10 | round / 10) s above goal, \(.secondsAboveLimit.total * 10 | round / 10) s above limit (as the agent sampled it); rungs: " + ([.rungs[] | "\(.strategy) \(.runs) runs, \(.helped)/\(.judged) helped"] | join("; "))' <<<"$doc")
    # Oldest first: when, which, memory_usage before and after, and how long it took.
    mapfile -t run_lines < <(jq -r --arg t0 "$t0" '.recentOptimizations | sort_by(.id)[]
      | "- +\((.startedAt / 1000 - ($t0 | tonumber)) * 1000 | floor) ms \(.strategy): memory_usage \(.before * 100 | floor) % -> \((.after // 0) * 100 | floor) %, \(.durationMs | floor) ms"' <<<"$doc")
    stop_pid "$pid"
    pid=
  fi
  stop_pid "$demo_pid"
  demo_pid=

  local p99 errors nreq
  p99=$(awk '$1 == "LAT_US" {printf "%.1f", $4 / 1000}' "$out/wrk.txt")
  errors=$(sed -n 's/^ERRORS //p' "$out/wrk.txt")
  nreq=$(awk '$1 == "REQUESTS" {print $2}' "$out/wrk.txt")
  rows+=("| $label | $kills (agent saw: $agent_kills) | $alive | $(mib "$peak") / $(mib "$final") MiB | ${nreq:-?} | ${p99:-?} ms | ${errors:-?} | $runs | $wakes |")
  eval "kills_$key=$kills"
  budget_lines+=("${budget_line:-}")
  remove_cgroups
  cgroups_made=()
}

budget_lines=()
kills_a=—
if [ "$alone" = 1 ]; then
  echo "run (a): the demo alone in a ${limit_mib} MiB memory cgroup, ${seconds} s" >&2
  run "(a) alone" 0 a
fi
kills_with=0 killed_runs=0
for i in $(seq 1 "$runs_b"); do
  echo "run (b$i): the demo in a ${limit_mib} MiB memory cgroup + perfpilot sidecar ($config_kind config), ${seconds} s" >&2
  run "(b$i) + perfpilot ($config_kind)" 1 b
  kills_with=$((kills_with + kills_b))
  [ "$kills_b" -gt 0 ] && killed_runs=$((killed_runs + 1))
done

echo
echo "Machine: $(nproc) cores, $(awk '/^model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), $(uname -r); cgroup v${cg_version} memory controller"
echo "Load average before the runs: $load_before; after: $(cut -d" " -f1-3 /proc/loadavg)"
echo "The demo: --cache-mb 2048 in a memory cgroup limited to ${limit_mib} MiB; load: wrk -t2 -c16 -d${seconds}s, Range: bytes=0-2097151 on /stream/id-<0..5000>"
echo "stress-ng --cpu 2 beside the runs: $([ "$stress" = 1 ] && echo yes || echo no)"
case "$config_kind" in
  sidecar) echo "The agent: examples/sidecar.toml as shipped, without memory_budget (the cgroup's limit is the limit)" ;;
  minimal) echo "The agent: a minimal budget (target, the demo's hooks, signal, goal = 0.8, limit = 1.0, ladder; nothing else)" ;;
esac
echo
echo "| run | OOM kills | demo alive at the end | cgroup peak / final | requests | p99 | errors | optimization runs | fast watch wakes |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
printf '%s\n' "${budget_lines[@]}" | sed '/^$/d'
echo
echo "the last (b) run's optimizations, from the start of the load:"
[ "${#run_lines[@]}" -gt 0 ] && printf '%s\n' "${run_lines[@]}" || echo "- none"
echo
if [ "$alone" = 1 ]; then
  echo "- without the agent: $kills_a OOM kill(s): $([ "$kills_a" -gt 0 ] && echo "killed, as expected" || echo "not killed: the load did not reach the limit")"
fi
echo "- with the agent: $kills_with OOM kill(s) in $runs_b run(s), $killed_runs run(s) with a kill: 0 kills: $([ "$kills_with" = 0 ] && echo met || echo "not met")"
