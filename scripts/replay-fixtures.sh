#!/usr/bin/env bash
# Makes ALL the replay's fidelity fixtures (tests/replay/) in one command: recordings by the
# real agent (release build) of the demo streaming service (examples/streaming_service), each
# beside the configuration it was recorded under (NAME.toml), each with the default (adaptive)
# reaction:
#   demo-range:   the demo (--cache-mb 1024) under the bench scripts' range-request load (wrk,
#                 2 threads, 16 connections) for ${RANGE_SECONDS:-30} s, with
#                 examples/sidecar.toml (its port rewritten) minus `watch_interval`: its budget
#                 is watched at the cadence from its signal;
#   demo-watched: the same with examples/sidecar.toml as it is (`watch_interval = "20ms"`);
#   leak:         the demo leaking ${LEAK_RATE:-16} MiB/s, no load, for ${LEAK_SECONDS:-30} s,
#                 with the leak bench's budget configuration (scripts/leak-budget.toml).
# Each agent records into a state_dir; at its end (SIGTERM) the open block is written, and
# the segments are copied to tests/replay/NAME/ beside NAME.toml. tests/replay/v1/ holds two
# recordings in segment format version 1 (made before the engine's clock was recorded); this
# script does not make them (today's agent writes version 2).
#
# For a comparison with real runs (docs/replay.md): FIXTURES_DIR=DIR writes there instead of
# tests/replay, ONLY=demo-range|demo-watched|leak makes one of them, and DEMO_GOAL=0.6 records
# the demo with its memory budget's goal set to that value.
#
# Loopback only, bounded: each run lasts its SECONDS (at most 120), and the demo and the
# agent are stopped after each run and on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

range_seconds=${RANGE_SECONDS:-30}
leak_seconds=${LEAK_SECONDS:-30}
rate=${LEAK_RATE:-16}
fixtures=${FIXTURES_DIR:-tests/replay}
only=${ONLY:-}
goal=${DEMO_GOAL:-}
[[ -z "$only" || "$only" =~ ^(demo-range|demo-watched|leak)$ ]] ||
  { echo "ONLY must be demo-range, demo-watched or leak" >&2; exit 2; }
[[ -z "$goal" || "$goal" =~ ^0?\.[0-9]+$|^1(\.0+)?$ ]] || { echo "DEMO_GOAL must be a ratio in (0, 1]" >&2; exit 2; }
for s in "$range_seconds" "$leak_seconds"; do
  [[ "$s" =~ ^[0-9]+$ && "$s" -ge 5 && "$s" -le 120 ]] || { echo "SECONDS must be 5..120" >&2; exit 2; }
done

. scripts/agent-lib.sh
need_load_tools
cargo build --release --quiet --bin perfpilot --example streaming_service
write_range_load_lua "$out/ranges.lua"
mkdir -p "$fixtures"

# $1 = name, $2 = seconds, $3 = 1 for the range load; the demo's arguments follow.
record() {
  local name=$1 seconds=$2 load=$3
  shift 3
  start_announcing env RUST_LOG=warn ./target/release/examples/streaming_service \
    --listen 127.0.0.1:0 "$@"
  demo_pid=$pid
  local demo_base=$base demo_port=${base##*:}
  mv "$out/stdout" "$out/demo-stdout"
  pid=
  local config="$fixtures/$name.toml" state="$out/state-$name"
  case "$name" in
    demo-range | demo-watched)
      local edits=(-e "s/127\.0\.0\.1:8080/127.0.0.1:$demo_port/g" -e "s/^port = 8080$/port = $demo_port/")
      [ "$name" = demo-range ] && edits+=(-e '/^watch_interval = /d')
      [ -n "$goal" ] && edits+=(-e "s/^goal = 0\.8$/goal = $goal/")
      sed "${edits[@]}" examples/sidecar.toml >"$config"
      ;;
    leak)
      {
        echo "# The leak bench's budget configuration (scripts/leak-budget.toml), recorded by"
        echo "# scripts/replay-fixtures.sh."
        sed "s|{demo}|$demo_base|g" scripts/leak-budget.toml
        printf '\n[target]\nport = %s\n' "$demo_port"
      } >"$config"
      ;;
  esac
  mkdir -m 0700 "$state"
  start_announcing env RUST_LOG=warn PERFPILOT_STATE_DIR="$state" ./target/release/perfpilot run \
    --config "$config" --listen 127.0.0.1:0
  local agent_pid=$pid
  if [ "$load" = 1 ]; then
    timeout $((seconds + 30)) wrk -t2 -c16 -d"${seconds}s" --timeout 10s \
      -s "$out/ranges.lua" "$demo_base/" >"$out/wrk.txt" 2>&1 || true
  else
    for _ in $(seq 1 "$seconds"); do
      kill -0 "$demo_pid" 2>/dev/null || break
      sleep 1
    done
  fi
  stop_pid "$agent_pid"
  stop_pid "$demo_pid"
  rm -rf "${fixtures:?}/$name"
  mkdir -p "$fixtures/$name"
  cp "$state"/recording/*.seg "$fixtures/$name/"
  echo "$name: $(ls "$fixtures/$name" | wc -l) segments, $(du -sk "$fixtures/$name" | cut -f1) KiB"
}

started=$SECONDS
[[ -z "$only" || "$only" == demo-range ]] && record demo-range "$range_seconds" 1 --cache-mb 1024
[[ -z "$only" || "$only" == demo-watched ]] && record demo-watched "$range_seconds" 1 --cache-mb 1024
[[ -z "$only" || "$only" == leak ]] && record leak "$leak_seconds" 0 --leak-mb-per-s "$rate"
echo "recorded in $((SECONDS - started)) s (after the release build)"
exit 0
