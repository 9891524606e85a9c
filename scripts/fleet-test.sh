#!/usr/bin/env bash
# A fleet behind one Prometheus: three agents on loopback ports, each with its own
# --worker-id, scraped every second by a real Prometheus server (Debian package
# `prometheus`) started on a loopback port with a generated config that also loads the
# shipped alerting rules. Through Prometheus's HTTP API, PromQL must return one memory-usage
# series and one optimization-runs series per worker (one agent's runs automatic: a tiny
# MEMORY_THRESHOLD; the others' manual), the three targets up, and the rules loaded.
# Fails naming what is missing after a bounded wait (60 s); stops everything on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v prometheus >/dev/null || { echo "prometheus not found (apt-get install prometheus)" >&2; exit 1; }
cargo build --quiet --bin perfpilot
. scripts/agent-lib.sh
bin=./target/debug/perfpilot
workers=(fleet-a fleet-b fleet-c)

# The agents: fleet-c's memory threshold is so low that memory-purge runs by itself.
targets=()
bases=()
for worker in "${workers[@]}"; do
  extra=()
  [ "$worker" = fleet-c ] && extra=(MEMORY_THRESHOLD=0.00001)
  start_announcing_as "$worker" env RUST_LOG=warn "${extra[@]}" "$bin" run \
    --listen 127.0.0.1:0 --interval 200ms --worker-id "$worker"
  bases+=("$base")
  targets+=("\"${base#http://}\"")
done
# Manual runs on the other two, so every worker has an optimization-runs series.
for i in 0 1; do
  curl -fsS --max-time 10 -XPOST "${bases[$i]}/performance-optimize" >/dev/null
done

# Prometheus on a free loopback port (asked of the kernel, then released for Prometheus).
prom_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
prom="http://127.0.0.1:$prom_port"
mkdir -p "$out/tsdb"
cp deploy/prometheus/perfpilot-alerts.yml "$out/"
cat >"$out/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 800ms
  evaluation_interval: 1s
rule_files:
  - perfpilot-alerts.yml
scrape_configs:
  - job_name: perfpilot
    static_configs:
      - targets: [$(IFS=,; echo "${targets[*]}")]
YAML
promtool check config "$out/prometheus.yml" >/dev/null
prometheus --config.file="$out/prometheus.yml" --storage.tsdb.path="$out/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn \
  >"$out/prometheus.stdout" 2>"$out/prometheus.stderr" &
started_pids+=("$!")
prom_pid=$!

# PromQL through the HTTP API; prints the result vector as JSON.
query() {
  curl -fsS --max-time 5 -G "$prom/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["status"] == "success", d; print(json.dumps(d["data"]["result"]))'
}
# The sorted, comma-separated values of label $2 across a result vector on stdin.
label_values() {
  python3 -c 'import json, sys; print(",".join(sorted(r["metric"].get(sys.argv[1], "") for r in json.load(sys.stdin))))' "$1"
}

expected=$(IFS=,; echo "${workers[*]}")
memory_query='perfpilot_memory_usage_ratio'
runs_query='sum by (worker, kind) (perfpilot_optimizations_total)'
up_query='up{job="perfpilot"} == 1'
deadline=$((SECONDS + 60))
while :; do
  kill -0 "$prom_pid" 2>/dev/null || { echo "prometheus exited:" >&2; cat "$out/prometheus.stderr" >&2; exit 1; }
  memory=$(query "$memory_query" 2>/dev/null || echo '[]')
  runs=$(query "$runs_query" 2>/dev/null || echo '[]')
  up=$(query "$up_query" 2>/dev/null || echo '[]')
  automatic=$(query 'sum by (worker) (perfpilot_optimizations_total{kind="automatic"})' 2>/dev/null || echo '[]')
  memory_workers=$(label_values worker <<<"$memory")
  runs_workers=$(label_values worker <<<"$runs")
  up_count=$(python3 -c 'import json, sys; print(len(json.loads(sys.argv[1])))' "$up")
  if [ "$memory_workers" = "$expected" ] && [ "$runs_workers" = "$expected" ] &&
    [ "$up_count" = 3 ] && [[ "$(label_values worker <<<"$automatic")" == *fleet-c* ]]; then
    break
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "FAIL: after 60 s Prometheus at $prom does not have one series per worker ($expected):" >&2
    echo "  $memory_query -> workers [$memory_workers]: $memory" >&2
    echo "  $runs_query -> workers [$runs_workers]: $runs" >&2
    echo "  $up_query -> $up_count targets up: $up" >&2
    echo "  automatic runs by worker: $automatic" >&2
    tail -n 20 "$out/prometheus.stderr" >&2
    exit 1
  fi
  sleep 1
done

echo "== $memory_query"
python3 -c 'import json, sys
for r in json.loads(sys.argv[1]): print("  %-8s %-22s %.6f" % (r["metric"]["worker"], r["metric"]["instance"], float(r["value"][1])))' "$memory"
echo "== $runs_query"
python3 -c 'import json, sys
for r in json.loads(sys.argv[1]): print("  %-8s %-10s %s" % (r["metric"]["worker"], r["metric"]["kind"], r["value"][1]))' "$runs"

# The shipped alerting rules loaded into the real server and evaluated without errors:
# every rule's health must be "ok". "unknown" means not evaluated yet, which proves nothing,
# so the check waits (at most 60 s) for every rule's first evaluation.
deadline=$((SECONDS + 60))
while :; do
  rules=$(curl -fsS --max-time 5 "$prom/api/v1/rules")
  if verdict=$(python3 -c 'import json, sys
d = json.loads(sys.argv[1])
rules = [r for g in d["data"]["groups"] for r in g["rules"]]
if not rules:
    sys.exit("no rules loaded")
bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
if bad:
    sys.exit(f"{len(bad)} of {len(rules)} rules not healthy: {bad}")
print(f"== alerting rules: {len(rules)} loaded from perfpilot-alerts.yml, all evaluated, none failing")' "$rules" 2>&1); then
    echo "$verdict"
    break
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "FAIL: after 60 s the alerting rules are not all evaluated and healthy: $verdict" >&2
    exit 1
  fi
  sleep 1
done
echo "fleet test: ok (3 workers through Prometheus at $prom, ${SECONDS} s)"
