#!/usr/bin/env bash
# The agent (release build, 1 s interval, defaults) under a connection flood: 5,000
# connections to its API on 127.0.0.1, a third of them sending an incomplete request head,
# the rest nothing; prints its RSS, open fds and `/health` latency as the flood grows, while
# it is held, and after it is released. Fails if RSS goes above FLOOD_RSS_BUDGET_MIB (default
# 16) or `/health` does not answer 200 at any step.
#
#   bash scripts/flood-rss.sh            # 5,000 connections
#   FLOOD_CONNECTIONS=2000 bash scripts/flood-rss.sh
#
# Bounded: FLOOD_CONNECTIONS (at most 15,000), 5 s per connect and per /health, `timeout 300`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bin perfpilot
. scripts/agent-lib.sh
start_announcing env RUST_LOG=warn ./target/release/perfpilot run --listen 127.0.0.1:0 --interval 1s
timeout 300 python3 scripts/flood_rss.py --pid "$pid" --base "$base" \
  --connections "${FLOOD_CONNECTIONS:-5000}" --budget-mib "${FLOOD_RSS_BUDGET_MIB:-16}"
