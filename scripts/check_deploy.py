"""Reads the files in deploy/ for scripts/check-deploy.sh.

  python3 scripts/check_deploy.py structure         # parse and check the shape; exit 1 on a problem
  python3 scripts/check_deploy.py names             # perfpilot_ metric names the rules and dashboard use
  python3 scripts/check_deploy.py sidecar-toml      # the ConfigMap's perfpilot.toml
  python3 scripts/check_deploy.py sidecar-env       # the sidecar's literal env, as NAME=VALUE lines
"""

import json
import re
import sys

import yaml

DEPLOY = "deploy"
RULES = f"{DEPLOY}/prometheus/perfpilot-alerts.yml"
DASHBOARD = f"{DEPLOY}/grafana/perfpilot-dashboard.json"
MANIFEST = f"{DEPLOY}/kubernetes/perfpilot-sidecar.yaml"
METRIC = re.compile(r"\bperfpilot_[a-z0-9_]*[a-z0-9]")


def rule_exprs():
    with open(RULES) as f:
        rules = yaml.safe_load(f)
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def dashboard_exprs(dash):
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    return exprs


def manifest():
    with open(MANIFEST) as f:
        return {d["kind"]: d for d in yaml.safe_load_all(f) if d}


def sidecar(docs):
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "perfpilot")


def structure():
    problems = []
    dash = dashboard()
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        problems.append(f"{DASHBOARD}: panel ids repeat: {ids}")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    if "worker" not in variables:
        problems.append(f"{DASHBOARD}: no `worker` template variable")
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        if not p.get("targets"):
            problems.append(f"{DASHBOARD}: panel {p['title']!r} has no query")
        for t in p.get("targets", []):
            if '$worker' not in t["expr"]:
                problems.append(f"{DASHBOARD}: {p['title']!r} ignores $worker: {t['expr']}")
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for needed in ["memory", "cpu", "latency", "connections", "optimization runs", "failed"]:
        if needed not in titles:
            problems.append(f"{DASHBOARD}: no panel about {needed}")

    docs = manifest()
    deployment = docs.get("Deployment")
    if deployment is None:
        problems.append(f"{MANIFEST}: no Deployment")
    else:
        template = deployment["spec"]["template"]
        pod = template["spec"]
        if pod.get("shareProcessNamespace") is not True:
            problems.append(f"{MANIFEST}: shareProcessNamespace is not true")
        notes = template["metadata"].get("annotations", {})
        if notes.get("prometheus.io/scrape") != "true":
            problems.append(f"{MANIFEST}: no prometheus.io/scrape: \"true\" annotation")
        container = sidecar(docs)
        port = notes.get("prometheus.io/port")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if port is None or int(port) not in ports.values():
            problems.append(f"{MANIFEST}: prometheus.io/port {port} is not a sidecar port {ports}")
        for probe in ["readinessProbe", "livenessProbe"]:
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != "/health" or get.get("port") not in ports:
                problems.append(f"{MANIFEST}: {probe} is not GET /health on a sidecar port")
        env = {e["name"]: e for e in container.get("env", [])}
        token = env.get("PERFPILOT_API__TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        if not token:
            problems.append(f"{MANIFEST}: the token does not come from a Secret")
        resources = container.get("resources", {})
        for kind in ["requests", "limits"]:
            if "memory" not in resources.get(kind, {}):
                problems.append(f"{MANIFEST}: no memory {kind} for the sidecar")
        mounts = {m["name"] for m in container.get("volumeMounts", [])}
        config_map = docs.get("ConfigMap", {}).get("metadata", {}).get("name")
        volumes = {v["name"]: v.get("configMap", {}).get("name") for v in pod.get("volumes", [])}
        if not any(volumes.get(m) == config_map for m in mounts):
            problems.append(f"{MANIFEST}: the sidecar does not mount the ConfigMap {config_map}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "structure":
        return structure()
    if command == "names":
        names = set()
        for expr in rule_exprs() + dashboard_exprs(dashboard()):
            names.update(METRIC.findall(expr))
        print("\n".join(sorted(names)))
        return 0
    if command == "sidecar-toml":
        print(manifest()["ConfigMap"]["data"]["perfpilot.toml"], end="")
        return 0
    if command == "sidecar-env":
        for e in sidecar(manifest()).get("env", []):
            if "value" in e:
                print(f"{e['name']}={e['value']}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
