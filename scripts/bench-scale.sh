#!/usr/bin/env bash
# Cost as the work grows (SPEC §8 "scale"), as markdown tables with the budgets:
#
# 1. A sidecar target holding 0 / 1,000 / 10,000 / MAX established loopback connections, and
#    10,000 while 200 a second more are opened and dropped (so the count changes between
#    samples) (scripts/scale_load.py; MAX: as many as the file-descriptor limit allows): one
#    target sample (median, `cargo bench --bench scale`), and the release agent's CPU beside
#    it at `--interval 100ms` and `1s` (`--target-port`, AGENT_SECONDS each, default 20) with
#    its CPU per sample. Beside 0 and MAX connections at 100 ms, `GET /performance-metrics`
#    under `wrk -t1 -c8 -d10s`: requests/s and p99 (the API must not stall while it samples).
# 2. A cgroup v2 target of 1 / 100 / 1,000 processes (`sleep`s moved into a cgroup created
#    under the v2 mount and removed on exit; on a hybrid host also into a v1 memory cgroup at
#    the same path, as systemd does): one sample (median).
# 3. A trigger with `predict.window` 10 / 100 / 1,000: one evaluation (median); and the
#    release agent at 50 ms with that window at 1,000 for 70 s: RSS (and peak) and CPU.
# 4. The latency layer, every request timed (`cargo bench --bench layer`, thread CPU time):
#    ns per request over the bare service, on one thread and on two, and over a service
#    whose response is built in `call` rather than when polled.
#
# CPU is the agent's threads' run time from /proc/<pid>/task/*/schedstat (nanoseconds, not
# 10 ms ticks) over the window. Connections go to 127.0.0.1 only; every load is bounded in
# count and time and stopped on exit. SKIP_LAYER=1 skips part 4 (two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

agent_seconds=${AGENT_SECONDS:-20}
[[ "$agent_seconds" =~ ^[0-9]+$ && "$agent_seconds" -ge 5 && "$agent_seconds" -le 300 ]] ||
  { echo "AGENT_SECONDS must be 5..300" >&2; exit 2; }

. scripts/agent-lib.sh
need_load_tools
command -v python3 >/dev/null || { echo "python3 is needed (the connection load)" >&2; exit 1; }

# As many file descriptors as this shell may have: the hard limit (raising it needs
# CAP_SYS_RESOURCE). The load's server and its clients are two processes, each holding one
# end of every connection, so MAX is the limit less a margin, and at most the ephemeral ports.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)
read -r port_lo port_hi </proc/sys/net/ipv4/ip_local_port_range
max_conns=$((fd_limit - 200))
ports=$((port_hi - port_lo - 1000))
[ "$max_conns" -le "$ports" ] || max_conns=$ports
[ "$max_conns" -le 50000 ] || max_conns=50000
echo "file-descriptor limit $fd_limit (hard limit $(ulimit -Hn)): MAX = $max_conns connections" >&2

echo "building (release)" >&2
cargo build --release --quiet --bin perfpilot
bench_exe() { # $1 = bench name: builds it and prints its executable
  cargo bench --bench "$1" --no-run 2>&1 | sed -n "s/.*Executable benches\/$1.rs (\(.*\))/\1/p" | tail -n 1
}
# Copies, so that rebuilding the tree while this runs changes nothing measured.
cp "${CARGO_TARGET_DIR:-target}/release/perfpilot" "$out/perfpilot"
scale_bench=$(bench_exe scale)
[ -n "$scale_bench" ] || { echo "cannot build benches/scale.rs" >&2; exit 1; }
cp "$scale_bench" "$out/scale-bench"
if [ "${SKIP_LAYER:-0}" != 1 ]; then
  layer_bench=$(bench_exe layer)
  [ -n "$layer_bench" ] || { echo "cannot build benches/layer.rs" >&2; exit 1; }
  cp "$layer_bench" "$out/layer-bench"
fi

# Median of one bench function, in ns, from criterion's bencher output: $1 = filter.
bench_ns() {
  "$out/scale-bench" --bench --output-format bencher "$1" 2>"$out/bench.stderr" |
    awk '$1 == "test" && $3 == "..." { gsub(",", "", $5); print $5 }' | tail -n 1
}
fmt_ns() { awk -v ns="$1" 'BEGIN { if (ns == "") print "n/a"; else if (ns >= 1e6) printf "%.2f ms", ns / 1e6; else if (ns >= 1e3) printf "%.1f µs", ns / 1e3; else printf "%d ns", ns }'; }
cpu_ns() { # run time of every thread of $1, ns
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%d\n", s }'
}

load_pid=
stop_load() { stop_pid "$load_pid"; load_pid=; }
cgroup_dir=
twin_dir=
sleepers=()
cleanup() {
  stop_load
  for s in "${sleepers[@]}"; do kill "$s" 2>/dev/null || true; done
  [ -z "$cgroup_dir" ] || rmdir "$cgroup_dir" 2>/dev/null || true
  [ -z "$twin_dir" ] || rmdir "$twin_dir" 2>/dev/null || true
  stop_started
}
trap cleanup EXIT

# Runs the agent beside the load for AGENT_SECONDS: $1 = interval; prints "cpu% per_sample_ns".
agent_cpu() {
  start_announcing env PERFPILOT_STRATEGIES__INTERVAL_BACKOFF__ENABLED=false RUST_LOG=warn \
    "$out/perfpilot" run --listen 127.0.0.1:0 --interval "$1" --target-port "$load_port"
  sleep 1
  local c0 t0 s0 c1 t1 s1
  s0=$(samples_total); c0=$(cpu_ns "$pid"); t0=$(now)
  sleep "$agent_seconds"
  s1=$(samples_total); c1=$(cpu_ns "$pid"); t1=$(now)
  awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" 'BEGIN {
    n = s1 - s0; if (n < 1) n = 1
    printf "%.3f %d\n", (c1 - c0) / 1e9 / (t1 - t0) * 100, (c1 - c0) / n
  }'
}

# wrk against the running agent ($base): prints "req/s p99".
api_load() {
  timeout 40 wrk -t1 -c8 -d10s --latency "$base/performance-metrics" >"$out/wrk.txt" 2>&1 ||
    { echo "wrk failed:" >&2; cat "$out/wrk.txt" >&2; exit 1; }
  awk '/Requests\/sec/ { rps = $2 } $1 == "99%" { p99 = $2 } END { printf "%d %s\n", rps, p99 }' "$out/wrk.txt"
}

conn_rows=()
api_rows=()
# N or N:CHURN (connections opened and dropped a second beside the N held). The churning row
# comes last: its dropped connections may hold ephemeral ports for a while, which the MAX row
# needs all of.
for row in 0 1000 10000 "$max_conns" 10000:200; do
  n=${row%%:*}
  churn=0
  [ "$row" = "$n" ] || churn=${row#*:}
  echo "connections: $n, churn $churn/s" >&2
  hold=$((2 * agent_seconds + 60 + n / 500))
  python3 scripts/scale_load.py "$n" "$hold" "$churn" >"$out/load.stdout" 2>"$out/load.stderr" &
  load_pid=$!
  for _ in $(seq 1 600); do
    grep -q '^ready ' "$out/load.stdout" && break
    kill -0 "$load_pid" 2>/dev/null || break
    sleep 0.1
  done
  read -r _ load_port server_pid held < <(grep '^ready ' "$out/load.stdout") ||
    { echo "the connection load did not start:" >&2; cat "$out/load.stderr" >&2; exit 1; }
  sample=$(PERFPILOT_SCALE_PID=$server_pid PERFPILOT_SCALE_LABEL=$row bench_ns sample_target)
  counted=$(sed -n 's/.*open_connections \(Some(\)\{0,1\}\([0-9]*\).*/\2/p' "$out/bench.stderr" | head -n 1)
  # In this shell, not a subshell: agent_cpu starts the agent and sets $pid and $base.
  agent_cpu 100ms >"$out/cpu"
  read -r cpu100 per100 <"$out/cpu"
  if [ "$row" = 0 ] || [ "$row" = "$max_conns" ]; then
    api_load >"$out/api"
    read -r rps p99 <"$out/api"
    api_rows+=("| $held | $rps | $p99 |")
  fi
  stop_pid "$pid"
  agent_cpu 1s >"$out/cpu"
  read -r cpu1s per1s <"$out/cpu"
  stop_pid "$pid"
  stop_load
  [ "$churn" = 0 ] || held="$held, $churn/s opened and dropped"
  conn_rows+=("| $held | ${counted:-?} | $(fmt_ns "$sample") | $cpu100 % ($(fmt_ns "$per100")/sample) | $cpu1s % ($(fmt_ns "$per1s")/sample) |")
done

echo "cgroups" >&2
cgroup_rows=()
v2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
if [ -z "$v2" ]; then
  cgroup_rows+=("| skipped: no cgroup v2 mount | | |")
else
  cgroup_dir="$v2/perfpilot-scale-$$"
  # On a hybrid host (the memory controller on a v1 hierarchy, no memory.current on v2),
  # systemd keeps a v1 memory cgroup at the same path with the same processes: so does this.
  v1_memory=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ { print $2; exit }' /proc/mounts)
  if ! mkdir "$cgroup_dir" 2>/dev/null; then
    cgroup_rows+=("| skipped: cannot create a cgroup under $v2 | | |")
    cgroup_dir=
  else
    twin_dir=
    if [ ! -e "$cgroup_dir/memory.current" ] && [ -n "$v1_memory" ] &&
      mkdir "$v1_memory/perfpilot-scale-$$" 2>/dev/null; then
      twin_dir="$v1_memory/perfpilot-scale-$$"
    fi
    for n in 1 100 1000; do
      while [ "${#sleepers[@]}" -lt "$n" ]; do
        sleep 600 &
        sleepers+=("$!")
        echo "$!" >"$cgroup_dir/cgroup.procs"
        [ -z "$twin_dir" ] || echo "$!" >"$twin_dir/cgroup.procs"
      done
      sample=$(PERFPILOT_SCALE_CGROUP=$cgroup_dir PERFPILOT_SCALE_LABEL=$n bench_ns sample_cgroup)
      memory_from="summed RSS (no memory controller for it)"
      [ ! -e "$cgroup_dir/memory.current" ] || memory_from="memory.current"
      [ -z "$twin_dir" ] || memory_from="v1 memory twin $twin_dir"
      cgroup_rows+=("| $(wc -l <"$cgroup_dir/cgroup.procs") | $(fmt_ns "$sample") | $memory_from |")
    done
    for s in "${sleepers[@]}"; do kill "$s" 2>/dev/null || true; done
    wait "${sleepers[@]}" 2>/dev/null || true
    sleepers=()
    rmdir "$cgroup_dir" 2>/dev/null || true
    [ -z "$twin_dir" ] || rmdir "$twin_dir" 2>/dev/null || true
    cgroup_dir=
  fi
fi

echo "trigger windows" >&2
trigger_rows=()
for w in 10 100 1000; do
  trigger_rows+=("| $w | $(fmt_ns "$(bench_ns "trigger_window/$w\$")") |")
done
full_fit=$(bench_ns "trigger_window/full_fit_1000")
[ -z "$full_fit" ] || trigger_rows+=("| 1000, fit from scratch (after a restart, or when the trend leaves the kept band) | $(fmt_ns "$full_fit") |")

# The agent itself with that window: RSS and CPU once the window is full (1,000 samples).
cat >"$out/window.toml" <<'TOML'
[strategies.memory_purge.trigger.predict]
window = 1000
[strategies.interval_backoff]
enabled = false
TOML
start_announcing env RUST_LOG=warn "$out/perfpilot" run --listen 127.0.0.1:0 --interval 50ms \
  --config "$out/window.toml"
sleep 5
w_c0=$(cpu_ns "$pid"); w_t0=$(now)
sleep 65
w_c1=$(cpu_ns "$pid"); w_t1=$(now)
window_row=$(awk -v c0="$w_c0" -v c1="$w_c1" -v t0="$w_t0" -v t1="$w_t1" \
  -v r="$(rss_kib)" -v h="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")" 'BEGIN {
  printf "| agent at 50 ms, `predict.window = 1000`, 70 s | RSS %.1f MiB (peak %.1f MiB) | %.2f %% of a core |", r / 1024, h / 1024, (c1 - c0) / 1e9 / (t1 - t0) * 100
}')
stop_pid "$pid"

layer_rows=()
if [ "${SKIP_LAYER:-0}" != 1 ]; then
  echo "latency layer (two minutes)" >&2
  PERFPILOT_BENCH_CLOCK=cpu "$out/layer-bench" --bench --output-format bencher '(layer_|prebuilt_)' 2>/dev/null |
    awk '$1 == "test" && $3 == "..." { gsub(",", "", $5); print $2, $5 }' >"$out/layer.txt"
  for g in layer_1_thread layer_2_threads prebuilt_1_thread; do
    layer_rows+=("$(awk -v g="$g" '
      $1 == g "/baseline" { b = $2 } $1 == g "/timed_all" { a = $2 } $1 == g "/timed_1_in_64" { s = $2 }
      END { budget = (g ~ /1_thread/) ? 15 : 25
            printf "| %s | %d ns | %+d ns | %s | %s (<= %d ns) |", g, b, a - b, (s == "" ? "—" : sprintf("%+d ns", s - b)), (a - b <= budget ? "met" : "not met"), budget }' "$out/layer.txt")")
  done
fi

echo
echo "File-descriptor limit: $fd_limit, so MAX = $max_conns connections. Agent windows: ${agent_seconds} s."
echo
echo "| connections | counted | one target sample (≤ 1 ms at 10,000) | agent CPU at 100 ms | agent CPU at 1 s (≤ 0.1 % at 10,000) |"
echo "|---|---|---|---|---|"
printf '%s\n' "${conn_rows[@]}"
echo
echo "| connections | GET /performance-metrics req/s (wrk -t1 -c8, agent at 100 ms) | p99 |"
echo "|---|---|---|"
printf '%s\n' "${api_rows[@]}"
echo
echo "| cgroup processes | one sample (≤ 2 ms at 1,000) | memory read from |"
echo "|---|---|---|"
printf '%s\n' "${cgroup_rows[@]}"
echo
echo "| trigger window | one evaluation (≤ 50 µs at 1,000) |"
echo "|---|---|"
printf '%s\n' "${trigger_rows[@]}"
echo
echo "| agent | memory (budget 8 MiB) | CPU |"
echo "|---|---|---|"
echo "$window_row"
if [ "${#layer_rows[@]}" -gt 0 ]; then
  echo
  echo "| latency layer (thread CPU; prebuilt: the response built in call) | baseline call | every request timed | 1 in 64 timed | budget |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${layer_rows[@]}"
fi
