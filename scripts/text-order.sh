#!/usr/bin/env bash
# Writes build/text-order.txt: the functions of the release agent that run at start and while
# it idles (sampling every second, recording, answering scrapes of /metrics,
# /performance-metrics and /health), as their symbol names, for build.rs to have lld place
# them together (why: build.rs). Run it after a change that renames or adds much code on the
# idle path, then rebuild the release binary; docs/performance.md has the effect.
#
# How: the release agent runs under valgrind's callgrind (every function executed is listed),
# twice, about 30 s each: alone, and as the sidecar of a `sleep` process (--target-pid, so the
# target's sampling code is listed too). Loopback only; each run is bounded by `timeout` and
# stopped by its pid.
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

profile() { # $1 = name, then extra agent arguments
  local name=$1 pid base
  shift
  RUST_LOG=warn PERFPILOT_STRATEGIES__INTERVAL_BACKOFF__ENABLED=false timeout -s INT 120 \
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
  sleep 10
  kill -INT "$pid"
  wait "$pid" || true
  echo "profiled: $name" >&2
}
profile alone
sleep 600 &
target_pid=$!
profile sidecar --target-pid "$target_pid"

# Every function callgrind saw run in the agent's own binary, first seen first, kept only if
# it is a symbol of the binary (callgrind also lists addresses and "(below main)").
nm "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$work/symbols"
python3 - "$bin" "$work/symbols" "$work"/alone.cg "$work"/sidecar.cg >build/text-order.txt <<'PY'
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
