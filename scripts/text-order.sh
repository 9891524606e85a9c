#!/usr/bin/env bash
# Writes build/text-order.txt: the functions of the release agent that run at start and while
# it idles (sampling every second, recording, answering scrapes of /metrics,
# /performance-metrics and /health), as their symbol names, for build.rs to have lld place
# them together (why: build.rs). Run it after a change that renames or adds much code on the
# idle path, then rebuild the release binary; docs/performance.md has the effect.
#
# How: the release agent runs under valgrind's callgrind (every function executed is listed),
# four times: alone with a state_dir for about 90 s (a segment of the recording sealed and
# written); again on that state_dir (the recording read back at start); as the sidecar of a
# `sleep` process (--target-pid: the target's sampling code); and with a memory budget whose
# fast watch is forced armed (the watch's code), about 30 s each. Loopback only; each run is
# bounded by `timeout` and stopped by its pid.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet --bin perfpilot
bin=$(realpath "${BENCH_BIN:-./target/release/perfpilot}")
work=$(mktemp -d)
target_pid=
cleanup() {
  [ -n "$target_pid" ] && kill "$target_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

profile() { # $1 = name, $2 = seconds to stay after the scrapes, then extra agent arguments
  local name=$1 stay=$2 pid base
  shift 2
  RUST_LOG=warn PERFPILOT_STRATEGIES__INTERVAL_BACKOFF__ENABLED=false timeout -s INT 240 \
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name.cg" \
    "$bin" run --listen 127.0.0.1:0 --interval 1s "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  for _ in $(seq 1 120); do
    grep -q '^listening on ' "$work/$name.out" 2>/dev/null && break
    sleep 0.5
  done
  base=$(sed -n 's/^listening on //p' "$work/$name.out")
  [ -n "$base" ] || { echo "the agent did not start under valgrind:" >&2; cat "$work/$name.err" >&2; exit 1; }
  sleep 5
  for _ in 1 2 3 4 5; do
    for route in metrics performance-metrics health; do
      curl -s --max-time 10 -o /dev/null "$base/$route"
      curl -s --max-time 10 -o /dev/null -H 'Accept-Encoding: gzip' "$base/$route"
    done
    sleep 2
  done
  sleep "$stay"
  kill -INT "$pid"
  wait "$pid" || true
  echo "profiled: $name" >&2
}
mkdir -p "$work/state"
PERFPILOT_STATE_DIR="$work/state" profile alone 70
# Started again on the same state_dir: the recording is read back.
PERFPILOT_STATE_DIR="$work/state" profile restored 5
sleep 600 &
target_pid=$!
profile sidecar 10 --target-pid "$target_pid"
printf '[budgets.memory]\nsignal = "memory_usage"\ngoal = 0.8\nlimit = 0.95\nladder = ["memory-purge"]\nwatch_interval = "20ms"\n' >"$work/budget.toml"
profile budget 10 --config "$work/budget.toml"

# Every function callgrind saw run in the agent's own binary, first seen first, kept only if
# it is a symbol of the binary (callgrind also lists addresses and "(below main)").
nm "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$work/symbols"
python3 - "$bin" "$work/symbols" "$work"/alone.cg "$work"/restored.cg "$work"/sidecar.cg "$work"/budget.cg >build/text-order.txt <<'PY'
import re, sys
binary, symbols, profiles = sys.argv[1], set(open(sys.argv[2]).read().split()), sys.argv[3:]
seen = []
for path in profiles:
    objects, functions, current = {}, {}, None
    for line in open(path, errors="replace"):
        m = re.match(r"(c?)ob=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(3):
                objects[m.group(2)] = m.group(3).strip()
            if not m.group(1):
                current = objects.get(m.group(2))
            continue
        m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(3):
                functions[m.group(2)] = m.group(3).strip()
            name = functions.get(m.group(2))
            if not m.group(1) and current == binary and name in symbols:
                seen.append(name)
print("\n".join(dict.fromkeys(seen)))
PY
echo "build/text-order.txt: $(wc -l <build/text-order.txt) functions" >&2
