#!/usr/bin/env bash
# Starts the agent on a loopback port, runs a manual optimization so every metric family has
# a series, and checks the /metrics output with promtool (Debian package `prometheus`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null || { echo "promtool not found (apt-get install prometheus)" >&2; exit 1; }
cargo build --quiet --bin perfpilot
. scripts/agent-lib.sh
start_announcing ./target/debug/perfpilot run --listen 127.0.0.1:0 --interval 200ms
curl -fsS --max-time 10 -XPOST "$base/performance-optimize" >/dev/null
sleep 0.5
curl -fsS --max-time 10 "$base/metrics" >"$out/metrics.txt"
promtool check metrics <"$out/metrics.txt"
echo "promtool check metrics: ok ($(grep -vc '^#' "$out/metrics.txt") series from $base/metrics)"
