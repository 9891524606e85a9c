#!/usr/bin/env bash
# Makes the replay's fidelity fixtures (tests/replay/): recordings by the real agent (release
# build) of the demo streaming service (examples/streaming_service), each with the
# configuration it was recorded under:
#   demo-range: the demo (--cache-mb 1024) under the bench scripts' range-request load (wrk,
#               2 threads, 16 connections) for ${RANGE_SECONDS:-30} s, with
#               examples/sidecar.toml (its port rewritten) minus `watch_interval`;
#   leak:       the demo leaking ${LEAK_RATE:-16} MiB/s, no load, for ${LEAK_SECONDS:-30} s,
#               with the leak bench's budget configuration (scripts/bench-leak.sh).
# An explicit `watch_interval` is left out; budgets are still watched at the cadence from their
# signal, and the replay wakes the engine where the recording has wakes. tests/replay/ holds
# demo-range and leak recorded before that cadence watch (no wakes), and leak-watched (this
# script's leak, recorded with it). The demo recorded with it does not reproduce exactly: its
# forecasts over wake samples a few ms apart hang on the agent's clock (docs/replay.md).
# Each agent records into a state_dir; at its end (SIGTERM) the open block is written, and
# the segments are copied to tests/replay/NAME/ beside NAME.toml.
#
# For a comparison with real runs (docs/replay.md): FIXTURES_DIR=DIR writes there instead of
# tests/replay, ONLY=demo-range|leak makes one of the two, and DEMO_GOAL=0.6 records the demo
# with its memory budget's goal set to that value.
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
[[ -z "$only" || "$only" =~ ^(demo-range|leak)$ ]] || { echo "ONLY must be demo-range or leak" >&2; exit 2; }
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
    demo-range)
      sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$demo_port/g" -e "s/^port = 8080$/port = $demo_port/" \
        -e '/^watch_interval = /d' ${goal:+-e "s/^goal = 0\.8$/goal = $goal/"} \
        examples/sidecar.toml >"$config"
      ;;
    leak)
      cat >"$config" <<CONF
# The leak bench's budget configuration (scripts/bench-leak.sh), recorded by
# scripts/replay-fixtures.sh.
interval = "1s"
memory_budget = "256MiB"

[target]
port = $demo_port

[budgets.memory]
signal = "memory_usage"
goal = 0.8
limit = 1.0
ladder = ["purge", "drop-sessions"]
settle = "1s"
calm = 2
cooldown = "5s"

[strategies.webhook.purge]
url = "$demo_base/admin/purge"

[strategies.webhook.drop-sessions]
url = "$demo_base/admin/sessions/drop"
body = { fraction = 0.5 }
CONF
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

[[ -z "$only" || "$only" == demo-range ]] && record demo-range "$range_seconds" 1 --cache-mb 1024
[[ -z "$only" || "$only" == leak ]] && record leak "$leak_seconds" 0 --leak-mb-per-s "$rate"
exit 0
