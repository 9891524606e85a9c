"""Reads the files in deploy/ for scripts/check-deploy.sh.

  python3 scripts/check_deploy.py structure [RENDERED]  # parse and check the shape; exit 1 on a problem
  python3 scripts/check_deploy.py names                 # perfpilot_ metric names the rules and dashboard use
  python3 scripts/check_deploy.py sidecar-toml [FILE]   # the ConfigMap's perfpilot.toml
  python3 scripts/check_deploy.py sidecar-env [FILE]    # the sidecar's env, as NAME=VALUE lines

FILE is the Kubernetes manifest (deploy/kubernetes/perfpilot-sidecar.yaml by default);
RENDERED, the output of `kubectl kustomize deploy/kubernetes/kustomize/example`, is checked
like the manifest and compared with it.
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


def manifest(path=MANIFEST):
    with open(path) as f:
        return {d["kind"]: d for d in yaml.safe_load_all(f) if d}


QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
QUANTITY_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                  "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity_bytes(text):
    """A Kubernetes memory quantity (`512Mi`, `1G`, `536870912`) in bytes, as the downward API
    hands it to a container (resourceFieldRef with the default divisor 1)."""
    match = QUANTITY.match(str(text))
    if not match:
        raise ValueError(f"not a memory quantity this check reads: {text!r}")
    return int(match.group(1)) * QUANTITY_UNITS[match.group(2)]


def resolved_env(pod, container):
    """The container's env as NAME=VALUE: literal values, and resourceFieldRef limits.memory
    resolved to the referenced container's limit in bytes, as the kubelet does."""
    containers = {c["name"]: c for c in pod["containers"]}
    lines = []
    for e in container.get("env", []):
        if "value" in e:
            lines.append(f"{e['name']}={e['value']}")
        ref = e.get("valueFrom", {}).get("resourceFieldRef")
        if ref and ref.get("resource") == "limits.memory":
            limit = containers[ref["containerName"]]["resources"]["limits"]["memory"]
            lines.append(f"{e['name']}={quantity_bytes(limit)}")
    return lines


def sidecar(docs):
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "perfpilot")


def structure(rendered=None):
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

    problems += pod_problems(manifest(), MANIFEST, service_required=True)
    if rendered:
        problems += pod_problems(manifest(rendered), rendered, service_required=False)
        problems += drift(manifest(), manifest(rendered), rendered)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def pod_problems(docs, where, service_required):
    """The sidecar's shape in one set of Kubernetes documents (`where` names them)."""
    problems = []
    deployment = docs.get("Deployment")
    if deployment is None:
        problems.append(f"{where}: no Deployment")
    else:
        template = deployment["spec"]["template"]
        pod = template["spec"]
        if pod.get("shareProcessNamespace") is not True:
            problems.append(f"{where}: shareProcessNamespace is not true")
        notes = template["metadata"].get("annotations", {})
        if notes.get("prometheus.io/scrape") != "true":
            problems.append(f"{where}: no prometheus.io/scrape: \"true\" annotation")
        container = sidecar(docs)
        port = notes.get("prometheus.io/port")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if port is None or int(port) not in ports.values():
            problems.append(f"{where}: prometheus.io/port {port} is not a sidecar port {ports}")
        for probe in ["readinessProbe", "livenessProbe"]:
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != "/health" or get.get("port") not in ports:
                problems.append(f"{where}: {probe} is not GET /health on a sidecar port")
        env = {e["name"]: e for e in container.get("env", [])}
        token = env.get("PERFPILOT_API__TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        if not token:
            problems.append(f"{where}: the token does not come from a Secret")
        resources = container.get("resources", {})
        for kind in ["requests", "limits"]:
            if "memory" not in resources.get(kind, {}):
                problems.append(f"{where}: no memory {kind} for the sidecar")
        mounts = {m["name"] for m in container.get("volumeMounts", [])}
        config_map = docs.get("ConfigMap", {}).get("metadata", {}).get("name")
        volumes = {v["name"]: v.get("configMap", {}).get("name") for v in pod.get("volumes", [])}
        if not any(volumes.get(m) == config_map for m in mounts):
            problems.append(f"{where}: the sidecar does not mount the ConfigMap {config_map}")
        problems += budget_problems(pod, container, docs, where)
        problems += service_problems(docs, template, container, where, service_required)
    return problems


def budget_problems(pod, container, docs, where):
    """The memory budget is the app container's limit (downward API), and the configuration
    holds it with a budget's ladder of hooks the FROM-scratch image can run."""
    problems = []
    env = {e["name"]: e for e in container.get("env", [])}
    ref = env.get("PERFPILOT_MEMORY_BUDGET", {}).get("valueFrom", {}).get("resourceFieldRef")
    others = {c["name"]: c for c in pod["containers"] if c["name"] != "perfpilot"}
    if not ref or ref.get("resource") != "limits.memory":
        problems.append(f"{where}: PERFPILOT_MEMORY_BUDGET is not a resourceFieldRef to limits.memory")
    elif ref.get("containerName") not in others:
        problems.append(f"{where}: PERFPILOT_MEMORY_BUDGET refers to {ref.get('containerName')!r}, "
                        f"not to an app container {sorted(others)}")
    elif "memory" not in others[ref["containerName"]].get("resources", {}).get("limits", {}):
        problems.append(f"{where}: the app container {ref['containerName']!r} has no memory limit "
                        "(the downward API would hand the node's memory as the budget)")
    toml = docs.get("ConfigMap", {}).get("data", {}).get("perfpilot.toml", "")
    if not re.search(r"^\[budgets\.[^\]]+\]", toml, re.M):
        problems.append(f"{where}: the configuration has no [budgets.NAME]")
    if re.search(r"^\[strategies\.command\.", toml, re.M):
        problems.append(f"{where}: a `command` strategy cannot run in the FROM-scratch image (no shell)")
    return problems


def service_problems(docs, template, container, where, required):
    """A Service that exposes the agent selects the pod, targets a sidecar port, and its DNS
    names are in api.allowed_hosts."""
    service = docs.get("Service")
    if service is None:
        return [f"{where}: no Service"] if required else []
    problems = []
    name = service["metadata"]["name"]
    labels = template["metadata"].get("labels", {})
    selector = service["spec"].get("selector", {})
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append(f"{where}: Service {name} selects {selector}, not the pod's labels {labels}")
    ports = {p["name"] for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
    if not any(p.get("targetPort") in ports for p in service["spec"].get("ports", [])):
        problems.append(f"{where}: Service {name} targets no sidecar port {sorted(map(str, ports))}")
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    hosts = env.get("PERFPILOT_API__ALLOWED_HOSTS", "").split(",")
    namespace = service["metadata"].get("namespace", "default")
    for host in [name, f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]:
        if host not in hosts:
            problems.append(f"{where}: Service name {host} is not in PERFPILOT_API__ALLOWED_HOSTS")
    return problems


def drift(manifest_docs, rendered_docs, where):
    """The component adds the manifest's sidecar: the same container (less the manifest's
    Service names and with the app's container name) and the same configuration."""
    problems = []
    ours, theirs = sidecar(manifest_docs), sidecar(rendered_docs)
    def comparable(container):
        container = json.loads(json.dumps(container))
        container["env"] = [e for e in container.get("env", [])
                            if e["name"] != "PERFPILOT_API__ALLOWED_HOSTS"]
        for e in container["env"]:
            e.get("valueFrom", {}).get("resourceFieldRef", {}).pop("containerName", None)
        return container
    if comparable(ours) != comparable(theirs):
        problems.append(f"{where}: the component's sidecar container differs from {MANIFEST}'s")
    toml = [d.get("ConfigMap", {}).get("data", {}).get("perfpilot.toml") for d in (manifest_docs, rendered_docs)]
    if toml[0] != toml[1]:
        problems.append(f"{where}: the component's perfpilot.toml differs from {MANIFEST}'s ConfigMap")
    return problems


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "structure":
        return structure(*sys.argv[2:3])
    if command == "names":
        names = set()
        for expr in rule_exprs() + dashboard_exprs(dashboard()):
            names.update(METRIC.findall(expr))
        print("\n".join(sorted(names)))
        return 0
    path = sys.argv[2] if len(sys.argv) > 2 else MANIFEST
    if command == "sidecar-toml":
        print(manifest(path)["ConfigMap"]["data"]["perfpilot.toml"], end="")
        return 0
    if command == "sidecar-env":
        docs = manifest(path)
        pod = docs["Deployment"]["spec"]["template"]["spec"]
        print("\n".join(resolved_env(pod, sidecar(docs))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
