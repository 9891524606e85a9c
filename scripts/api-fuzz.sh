#!/usr/bin/env bash
# Schema-driven fuzzing of the live agent's API with schemathesis (PyPI, in a venv under
# target/): every operation of /openapi.json, all checks, expecting zero 5xx and zero schema
# violations. GET /events (an endless stream) is left out.
#
# scripts/schemathesis.toml lets the recording's read routes (/performance-metrics/history,
# /report) answer a generated since/until/step/signals that is not a time, a duration or a
# known signal with 400: the schema cannot say which free-text values are valid.
#
# The manual-trigger rate limit is turned off for the run so that generated requests reach the
# handler instead of stopping at 429 (the limit itself is tested in tests/hardening.rs).
#
# Bounded: API_FUZZ_MAX_EXAMPLES test cases per operation (default 50), 10 s per request,
# `timeout 300` overall; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/api-fuzz-venv
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION:-4.32.5}"
fi
"$venv/bin/st" --version

cargo build --quiet --bin perfpilot
. scripts/agent-lib.sh
start_announcing env PERFPILOT_API__RATE_LIMIT__PER_MINUTE=0 RUST_LOG=warn \
  ./target/debug/perfpilot run --listen 127.0.0.1:0 --interval 200ms

status=0
timeout 300 "$venv/bin/st" --config-file scripts/schemathesis.toml run "$base/openapi.json" \
  --url "$base" \
  --checks all \
  --exclude-path /events \
  --max-examples "${API_FUZZ_MAX_EXAMPLES:-50}" \
  --request-timeout 10 \
  --generation-database none \
  --no-color \
  --report-dir "$out/report" || status=$?
kill -0 "$pid" 2>/dev/null || { echo "the agent died during the run" >&2; status=1; }
exit "$status"
