#!/usr/bin/env bash
# Checks the files in deploy/: the Prometheus rules (promtool check rules and their unit
# tests), the scrape configs, the Grafana dashboard JSON, the Kubernetes manifest and the
# Kustomize component's output (`kubectl kustomize`; skipped where kubectl is missing) (parsed
# and their shape checked), the configuration they hand the agent (perfpilot check-config),
# the systemd unit (systemd-analyze verify, where installed), and that every perfpilot_
# metric the rules and the dashboard query exists in live agents' /metrics output.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null || { echo "promtool not found (apt-get install prometheus)" >&2; exit 1; }
python3 -c 'import yaml' 2>/dev/null || { echo "python3 yaml not found (apt-get install python3-yaml)" >&2; exit 1; }
cargo build --quiet --bin perfpilot --example embedded_axum
. scripts/agent-lib.sh
bin=./target/debug/perfpilot

echo "== promtool check rules / test rules"
promtool check rules deploy/prometheus/perfpilot-alerts.yml
(cd deploy/prometheus && promtool test rules perfpilot-alerts.test.yml)

echo "== promtool check config"
# The scrape jobs read the agents' read token from a file, which promtool wants to exist:
# check copies whose credentials_file points at a token file made here.
mkdir -p "$out/prometheus"
cp deploy/prometheus/*.yml "$out/prometheus/"
echo "read-token-for-the-check" >"$out/prometheus/read-token"
for config in prometheus.yml prometheus-kubernetes.yml; do
  grep -q 'credentials_file: ' "$out/prometheus/$config" \
    || { echo "$config: no credentials_file for the read token" >&2; exit 1; }
  sed -i "s|credentials_file: .*|credentials_file: $out/prometheus/read-token|" "$out/prometheus/$config"
done
promtool check config "$out/prometheus/prometheus.yml"
if ! promtool check config "$out/prometheus/prometheus-kubernetes.yml" >"$out/k8s-config.txt" 2>&1; then
  if grep -q 'field kubernetes_sd_configs not found' "$out/k8s-config.txt"; then
    # Debian builds Prometheus without Kubernetes service discovery: check everything else
    # (authorization, every relabel rule's action and regex) with a static target in place
    # of the two-line discovery block.
    sed -e 's|^    kubernetes_sd_configs:$|    static_configs:|' \
      -e 's|^      - role: pod$|      - targets: ["127.0.0.1:9090"]|' \
      "$out/prometheus/prometheus-kubernetes.yml" >"$out/prometheus/prometheus-kubernetes-static.yml"
    ! grep -q kubernetes_sd_configs "$out/prometheus/prometheus-kubernetes-static.yml" ||
      { echo "prometheus-kubernetes.yml: its discovery block is not the expected two lines" >&2; exit 1; }
    promtool check config "$out/prometheus/prometheus-kubernetes-static.yml"
    echo "prometheus-kubernetes.yml: checked with static_configs in place of kubernetes_sd_configs (this promtool has no Kubernetes discovery)"
  else
    cat "$out/k8s-config.txt" >&2
    exit 1
  fi
fi

echo "== Kustomize component: kubectl kustomize deploy/kubernetes/kustomize/example"
# Components need kustomize 4.1 or later (kubectl 1.21+); Debian's kubernetes-client is 1.20.
rendered=""
if ! command -v kubectl >/dev/null; then
  echo "skipped: kubectl not installed (the component needs kubectl 1.21+ with its kustomize)"
else
  minor=$(kubectl version --client -o json | python3 -c 'import json, sys; print(int(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+")))')
  if [ "$minor" -lt 21 ]; then
    echo "skipped: kubectl 1.$minor's kustomize has no components (needs kubectl 1.21+)"
  else
    kubectl kustomize deploy/kubernetes/kustomize/example >"$out/kustomized.yaml"
    rendered="$out/kustomized.yaml"
    echo "rendered: $(grep -c '^kind:' "$rendered") documents (kubectl 1.$minor)"
  fi
fi

echo "== dashboard JSON, manifest YAML: parse and shape"
python3 -m json.tool deploy/grafana/perfpilot-dashboard.json >/dev/null
python3 scripts/check_deploy.py structure $rendered
echo "ok"

echo "== the configuration the deploy files give the agent (perfpilot check-config)"
for manifest in deploy/kubernetes/perfpilot-sidecar.yaml $rendered; do
  python3 scripts/check_deploy.py sidecar-toml "$manifest" >"$out/sidecar.toml"
  # Into files first: a failing step inside `< <(...)` would not stop the script.
  python3 scripts/check_deploy.py sidecar-env "$manifest" >"$out/sidecar-env.txt"
  mapfile -t sidecar_env <"$out/sidecar-env.txt"
  [ ${#sidecar_env[@]} -gt 0 ] || { echo "no environment read from $manifest" >&2; exit 1; }
  # The memory budget is the app's limit from the downward API, a plain byte count.
  printf '%s\n' "${sidecar_env[@]}" | grep -qE '^PERFPILOT_MEMORY_BUDGET=[0-9]+$' ||
    { echo "$manifest: no PERFPILOT_MEMORY_BUDGET byte count" >&2; exit 1; }
  env "${sidecar_env[@]}" PERFPILOT_API__TOKEN=from-the-secret PERFPILOT_API__READ_TOKEN=from-the-secret-too \
    PERFPILOT_WORKER_ID=pod-name \
    "$bin" check-config --config "$out/sidecar.toml" >"$out/sidecar-check.txt"
  grep -qE '^memory_budget = [0-9]+ +# env PERFPILOT_MEMORY_BUDGET' "$out/sidecar-check.txt" ||
    { echo "$manifest: the agent did not take memory_budget from PERFPILOT_MEMORY_BUDGET" >&2; exit 1; }
  echo "kubernetes sidecar ($manifest): ok ($(grep -c . "$out/sidecar-check.txt") settings)"
done
mapfile -t systemd_env < <(grep -E '^[A-Z_]+=' deploy/systemd/perfpilot.env)
env "${systemd_env[@]}" "$bin" check-config --config /dev/null >/dev/null
echo "systemd env file: ok"

echo "== systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
  # ExecStart must name an existing executable: point it at the one just built.
  sed "s|/usr/local/bin/perfpilot|$PWD/target/debug/perfpilot|" deploy/systemd/perfpilot.service \
    >"$out/perfpilot.service"
  systemd-analyze verify "$out/perfpilot.service"
  echo "ok"
else
  echo "skipped: systemd-analyze not installed"
fi

echo "== every metric the rules and the dashboard use is in live /metrics"
# Library mode (the embedded_axum example: latency layer, connections, tokio runtime) and a
# sidecar agent watching it (open fds, probe latency) between them export every family.
start_announcing_as embedded env RUST_LOG=warn ./target/debug/examples/embedded_axum --listen 127.0.0.1:0
embedded_base=$base
embedded_pid=$pid
# A budget, so its perfpilot_budget_* series are exported: a goal any process is above, so
# an episode runs and its rung and episode series exist (its one rung is the agent's own
# interval-backoff: the check needs the series, not relief).
cat >"$out/budget.toml" <<'EOF'
[budgets.memory]
signal = "memory_usage"
goal = 0.000001
limit = 1.0
ladder = ["interval-backoff"]
EOF
start_announcing_as sidecar env RUST_LOG=warn "$bin" run --listen 127.0.0.1:0 --interval 200ms \
  --target-pid "$embedded_pid" --probe-url "$embedded_base/ping" --config "$out/budget.toml"
sidecar_base=$base
curl -fsS --max-time 10 -XPOST "$embedded_base/performance-optimize" >/dev/null
curl -fsS --max-time 10 -XPOST "$sidecar_base/performance-optimize" >/dev/null
python3 scripts/check_deploy.py names >"$out/used-names.txt"
mapfile -t used <"$out/used-names.txt"
[ ${#used[@]} -gt 0 ] || { echo "no metric names read from the rules and the dashboard" >&2; exit 1; }
deadline=$((SECONDS + 30))
while :; do
  # Requests in the window the embedded agent samples (every 5 s by default).
  for i in $(seq 1 20); do curl -fsS --max-time 5 "$embedded_base/items/$i" >/dev/null; done
  # Embedded, the agent's Prometheus route is under /perfpilot (the host app owns /metrics).
  { curl -fsS --max-time 5 "$embedded_base/perfpilot/metrics"; curl -fsS --max-time 5 "$sidecar_base/metrics"; } |
    awk '!/^#/ && NF { sub(/[{ ].*/, "", $1); print $1 }' | sort -u >"$out/live-names.txt"
  # A forecast exists only while a trigger signal rises towards its target: its name is
  # checked against the agent's registry in src/prometheus.rs's tests instead.
  echo perfpilot_trigger_forecast_seconds >>"$out/live-names.txt"
  # A rung's cost exists once a judged run had latency windows on both sides, or its hook
  # reported a drop; both names are checked in src/prometheus.rs's tests
  # (each_rungs_cost_is_a_series_per_budget_and_rung).
  printf '%s\n' perfpilot_budget_rung_mean_p99_change_seconds \
    perfpilot_budget_rung_reported_cost_total >>"$out/live-names.txt"
  missing=()
  for name in "${used[@]}"; do grep -qxF "$name" "$out/live-names.txt" || missing+=("$name"); done
  [ ${#missing[@]} -eq 0 ] && break
  if [ $SECONDS -ge $deadline ]; then
    echo "used in deploy/ but not in any live /metrics output: ${missing[*]}" >&2
    exit 1
  fi
  sleep 1
done
echo "ok: ${#used[@]} metric names, all live"
