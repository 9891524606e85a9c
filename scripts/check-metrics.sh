#!/usr/bin/env bash
# Starts the agent on a loopback port, runs a manual optimization so every metric family has
# a series, and checks the /metrics output with promtool (Debian package `prometheus`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null || { echo "promtool not found (apt-get install prometheus)" >&2; exit 1; }
cargo build --quiet --bin perfpilot
out=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$out"' EXIT
./target/debug/perfpilot run --listen 127.0.0.1:0 --interval 200ms >"$out/stdout" 2>"$out/stderr" &
pid=$!
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$out/stdout" 2>/dev/null && break
  sleep 0.1
done
base=$(sed -n 's/^listening on //p' "$out/stdout" | head -n 1)
[ -n "$base" ] || { echo "agent did not start:" >&2; cat "$out/stderr" >&2; exit 1; }
curl -fsS --max-time 10 -XPOST "$base/performance-optimize" >/dev/null
sleep 0.5
curl -fsS --max-time 10 "$base/metrics" >"$out/metrics.txt"
promtool check metrics <"$out/metrics.txt"
echo "promtool check metrics: ok ($(grep -vc '^#' "$out/metrics.txt") series from $base/metrics)"
