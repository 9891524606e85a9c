#!/usr/bin/env bash
# The agent (release build, 1 s interval, defaults) under three floods on 127.0.0.1, one
# agent each; prints its RSS, open fds and `/health` latency as the flood grows, while it is
# held (sampled every 0.5 s) and after it is released:
#
#   idle         5,000 connections, a third sending an incomplete request head, the rest nothing
#   large-heads  300 connections each sending a 400 KB header line, never finished (half over
#                HTTP/1.1, half over HTTP/2 as HEADERS + CONTINUATION frames)
#   slow-bodies  270 connections (9 from each of 30 loopback addresses) each sending
#                `POST /performance-optimize` with `Content-Length: 100` and 1 byte of body
#                (the rate limit off, so that every one reaches the body read)
#
# Fails if RSS goes above FLOOD_RSS_BUDGET_MIB (default 16), or `/health` does not answer 200
# within FLOOD_HEALTH_MS (default 100) at any sample.
#
#   bash scripts/flood-rss.sh                       # all three
#   FLOOD_MODES=large-heads bash scripts/flood-rss.sh
#   FLOOD_CONNECTIONS=2000 bash scripts/flood-rss.sh   # idle flood size
#
# Bounded: at most 15,000 connections, 5 s per connect and per /health, `timeout 300` a flood.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bin perfpilot
. scripts/agent-lib.sh
status=0
for mode in ${FLOOD_MODES:-idle large-heads slow-bodies}; do
  case "$mode" in
    idle) connections=${FLOOD_CONNECTIONS:-5000}; extra=() ;;
    large-heads) connections=300; extra=() ;;
    slow-bodies) connections=270; extra=(PERFPILOT_API__RATE_LIMIT__PER_MINUTE=0) ;;
    *) echo "unknown flood mode: $mode" >&2; exit 2 ;;
  esac
  echo "== $mode"
  start_announcing_as "$mode" env RUST_LOG=warn "${extra[@]}" \
    ./target/release/perfpilot run --listen 127.0.0.1:0 --interval 1s
  timeout 300 python3 scripts/flood_rss.py --pid "$pid" --base "$base" --mode "$mode" \
    --connections "$connections" --budget-mib "${FLOOD_RSS_BUDGET_MIB:-16}" \
    --health-ms "${FLOOD_HEALTH_MS:-100}" || status=1
  stop_pid "$pid"
  echo
done
exit $status
