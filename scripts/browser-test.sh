#!/usr/bin/env bash
# End-to-end test of the dashboard (GET /) in Debian's headless Chromium.
#
# Starts two agents and chromedriver, each in its own process group, then
# scripts/browser_test.py speaks W3C WebDriver to chromedriver with Python's standard library:
#
# - the first agent has a read token and an API token: open /, get the token prompt, enter the
#   read token, wait for the memory chart to fill, click memory-purge, answer the 401 with the
#   API token, see the run in the table, and write a screenshot to target/dashboard.png;
# - the second has the defaults (no token): a page served from another local port tries a
#   `fetch` POST (text/plain) and a form POST to it; both must be refused (403, logged) and no
#   run recorded, while a curl-style POST without Origin still runs.
#
# Everything listens on 127.0.0.1 and every wait is bounded; the trap stops whatever was
# started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

fail() { echo "browser test FAILED: $*" >&2; exit 1; }
for tool in chromium chromedriver python3; do
  command -v "$tool" >/dev/null || fail "$tool not found (apt-get install chromium chromium-driver python3)"
done

cargo build --quiet --bin perfpilot

work=$(mktemp -d)
leaders=()
cleanup() {
  local status=$?
  for pid in "${leaders[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${leaders[@]}"; do
    for _ in $(seq 1 30); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for log in agent.err open.err chromedriver.log; do
      [ -s "$work/$log" ] && { echo "--- last lines of $log" >&2; tail -n 20 "$work/$log" >&2; }
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
read_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
# start_agent NAME VAR=VALUE...: a clean environment and an empty working directory (no
# perfpilot.toml, no legacy variables); setsid: each process leads its own group, so the trap
# can stop it with all its children. Sets $base to the agent's URL.
start_agent() {
  local name=$1
  shift
  mkdir -p "$work/$name"
  (cd "$work/$name" && exec setsid env -i PATH="$PATH" "$@" \
    "$root/target/debug/perfpilot" run --listen 127.0.0.1:0 --interval 200ms \
    >"$work/$name.out" 2>"$work/$name.err") &
  leaders+=($!)
  for _ in $(seq 1 200); do
    grep -q '^listening on ' "$work/$name.out" 2>/dev/null && break
    sleep 0.1
  done
  base=$(sed -n 's/^listening on //p' "$work/$name.out" | head -n 1)
  [ -n "$base" ] || fail "agent $name did not print 'listening on http://ADDR' within 20 s"
  echo "agent $name at $base"
}
start_agent agent PERFPILOT_API__TOKEN="$token" PERFPILOT_API__READ_TOKEN="$read_token"
dashboard_base=$base
# The open agent logs its refusals (debug), so the test sees the page's requests arrived.
start_agent open RUST_LOG="warn,perfpilot::api::access=debug"
open_base=$base

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setsid chromedriver --port="$port" --allowed-ips=127.0.0.1 --log-path="$work/chromedriver.log" \
  >/dev/null 2>&1 &
leaders+=($!)
for _ in $(seq 1 100); do
  curl -fsS --max-time 1 "http://127.0.0.1:$port/status" 2>/dev/null | grep -q '"ready": *true' && break
  sleep 0.1
done
curl -fsS --max-time 1 "http://127.0.0.1:$port/status" >/dev/null 2>&1 \
  || fail "chromedriver did not answer on 127.0.0.1:$port within 10 s"

mkdir -p target
rm -f target/dashboard.png target/dashboard-failure.png
timeout 150 python3 scripts/browser_test.py \
  --webdriver "http://127.0.0.1:$port" --base "$dashboard_base" --token "$token" \
  --read-token "$read_token" --open-base "$open_base" --open-log "$work/open.err" \
  --chromium "$(command -v chromium)" --profile "$work/profile" --screenshot target/dashboard.png
