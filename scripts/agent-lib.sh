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
  remove_cgroups
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
# Nanoseconds on a CPU: the sum over the process's threads of the first field of
# /proc/<pid>/task/<tid>/schedstat (the kernel's runtime of each thread, the time utime+stime
# are scaled to, without their 10 ms ticks). A thread that has exited is no longer counted.
cpu_ns() { cat /proc/"$pid"/task/*/schedstat 2>/dev/null | awk '{ns += $1} END {printf "%d\n", ns}'; }
# Every series carries a worker="..." label, so match the name up to its label set.
samples_total() { curl -fsS --max-time 5 "$base/metrics" | awk '$1 ~ /^perfpilot_samples_total($|\{)/ {print $2}'; }
now() { date +%s.%N; }

# Writes the range-request load of the bench scripts to $1: a wrk Lua script asking for
# `Range: bytes=0-2097151` of /stream/id-<random 0..5000> (nearly every request a new 2 MiB
# chunk for the demo's cache); done() prints LAT_US p50 p95 p99 max, ERRORS and REQUESTS.
write_range_load_lua() {
  cat >"$1" <<'LUA'
wrk.headers["Range"] = "bytes=0-2097151"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  math.randomseed(os.time() * 100 + (tid or 0))
end
function request()
  return wrk.format(nil, "/stream/id-" .. math.random(0, 5000))
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("LAT_US %d %d %d %d\n", latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max))
  io.write(string.format("ERRORS connect=%d read=%d write=%d status=%d timeout=%d\n",
    e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("REQUESTS %d %.1f\n", summary.requests,
    summary.requests / (summary.duration / 1e6)))
end
LUA
}

# A memory cgroup limited to $2 bytes, named $1, under this shell's own memory cgroup: cgroup
# v1 `memory.limit_in_bytes` where the memory controller is v1, else v2 `memory.max`. Sets
# $cg_dir, $cg_version (1 or 2) and registers its removal on exit (after the processes in it
# are stopped). Fails with a message when neither can be made.
make_memory_cgroup() {
  local name=$1 limit=$2 own mount
  own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3; exit}' /proc/self/cgroup)
  mount=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ {print $2; exit}' /proc/mounts)
  if [ -n "$own" ] && [ -n "$mount" ]; then
    cg_dir="$mount${own%/}/$name"
    cg_version=1
    mkdir "$cg_dir" && echo "$limit" >"$cg_dir/memory.limit_in_bytes" || { echo "cannot make $cg_dir" >&2; exit 1; }
  else
    own=$(awk -F: '$1 == "0" {print $3; exit}' /proc/self/cgroup)
    mount=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
    [ -n "$mount" ] && grep -qw memory "$mount${own%/}/cgroup.controllers" 2>/dev/null ||
      { echo "no memory controller: neither cgroup v1 memory nor a v2 memory controller here" >&2; exit 1; }
    echo +memory >"$mount${own%/}/cgroup.subtree_control" 2>/dev/null || true
    cg_dir="$mount${own%/}/$name"
    cg_version=2
    mkdir "$cg_dir" && echo "$limit" >"$cg_dir/memory.max" || { echo "cannot make $cg_dir" >&2; exit 1; }
  fi
  cgroups_made+=("$cg_dir")
}
cgroups_made=()
remove_cgroups() {
  for dir in "${cgroups_made[@]}"; do
    for _ in $(seq 1 50); do rmdir "$dir" 2>/dev/null && break; sleep 0.1; done
  done
}
# The OOM kills counted in cgroup $1 (v1 memory.oom_control, v2 memory.events), 0 if unread.
cgroup_oom_kills() {
  local f="$1/memory.oom_control"
  [ -f "$f" ] || f="$1/memory.events"
  awk '$1 == "oom_kill" {print $2; found = 1} END {if (!found) print 0}' "$f"
}
# Its usage now and its peak, bytes (v1 usage_in_bytes / max_usage_in_bytes, v2 current / peak).
cgroup_usage() { cat "$1/memory.usage_in_bytes" 2>/dev/null || cat "$1/memory.current"; }
cgroup_peak() { cat "$1/memory.max_usage_in_bytes" 2>/dev/null || cat "$1/memory.peak" 2>/dev/null || echo 0; }

# Sets $agent to the binary a bench measures: $BENCH_AGENT when set (it must be executable),
# else the release build of this checkout (built now).
bench_agent() {
  if [ -n "${BENCH_AGENT:-}" ]; then
    [ -x "$BENCH_AGENT" ] || { echo "BENCH_AGENT=$BENCH_AGENT is not an executable file" >&2; exit 2; }
    agent=$BENCH_AGENT
  else
    cargo build --release --quiet --bin perfpilot
    agent=./target/release/perfpilot
  fi
}
