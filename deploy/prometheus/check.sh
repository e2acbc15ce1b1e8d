#!/usr/bin/env bash
# Check the monitoring files of the deployment, offline:
#   - deploy/prometheus/alerts.yaml: promtool check rules, then its unit tests
#     (deploy/prometheus/alerts_test.yaml, promtool test rules);
#   - deploy/prometheus/prometheus.example.yaml: promtool check config;
#   - deploy/grafana/sessiond.json: valid JSON, unique panel ids, every query on the
#     dashboard's data source variable, every query valid PromQL (promtool check rules on the
#     queries with the dashboard's variables substituted);
#   - every metric name used by the rules and the dashboard is one the node exports (read from
#     node/src/metrics.rs, histograms with their _bucket/_sum/_count series) or one of the few
#     external metrics they use (up, node_exporter's filesystem metrics); the `field` values of
#     sessiond_raft are the ones metrics.rs sets. With --names FILE, the node's metric names
#     are instead those listed in FILE (one per line, # comments), e.g. taken from a live node:
#       curl -s http://127.0.0.1:7201/metrics | grep -v '^#' | sed 's/[{ ].*//' | sort -u
#     (a labelled counter shows there only once it has counted: sessiond_expired_swept_total
#     after the first expiry sweep, sessiond_commands_total on a leader after a write);
#   - every alert has for:, a severity and summary/description/runbook_url annotations, and
#     its runbook_url anchor is a heading of docs/operations.md.
#
# Needs: promtool (Debian package prometheus) and python3 with PyYAML (scripts/setup.sh all
# installs both).
# Usage: deploy/prometheus/check.sh [--names FILE]   (from any directory)
set -euo pipefail
cd "$(dirname "$0")/../.."

names_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --names) names_file="$(realpath "$2")"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check.sh: unknown argument $1 (usage: check.sh [--names FILE])" >&2; exit 2 ;;
  esac
done

if ! command -v promtool >/dev/null 2>&1; then
  echo "check.sh: promtool not found; install the Debian package prometheus" >&2
  exit 2
fi
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "check.sh: PyYAML not found for python3; pip install PyYAML (scripts/setup.sh all does)" >&2
  exit 2
fi

rules=deploy/prometheus/alerts.yaml
tests=deploy/prometheus/alerts_test.yaml
config=deploy/prometheus/prometheus.example.yaml
dashboard=deploy/grafana/sessiond.json

promtool check rules "$rules"
promtool test rules "$tests"
promtool check config "$config"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The dashboard's queries as recording rules, so that promtool parses them.
python3 - "$dashboard" "$tmp/dashboard_rules.yaml" <<'PY'
import json
import sys

import yaml

path, out = sys.argv[1], sys.argv[2]
with open(path) as f:
    dash = json.load(f)

failed = False
def error(msg):
    global failed
    print(f"ERROR {path}: {msg}")
    failed = True

names = [v.get("name") for v in dash.get("templating", {}).get("list", [])]
if "datasource" not in names:
    error("no data source variable named datasource")

def substitute(expr):
    for var, value in (("$__rate_interval", "5m"), ("$job", "sessiond"), ("$instance", ".*")):
        expr = expr.replace(var, value)
    if "$" in expr:
        error(f"an unknown variable in {expr!r}")
    return expr

exprs = []
ids = set()
def walk(panels):
    for p in panels:
        if p.get("id") in ids:
            error(f"panel id {p.get('id')} repeated")
        ids.add(p.get("id"))
        if p.get("type") != "row":
            ds = p.get("datasource", {})
            if ds.get("uid") != "${datasource}":
                error(f"panel {p.get('title')!r} does not use the ${{datasource}} variable")
            if not p.get("targets"):
                error(f"panel {p.get('title')!r} has no query")
            for t in p.get("targets", []):
                if t.get("datasource", {}).get("uid") != "${datasource}":
                    error(f"a query of {p.get('title')!r} does not use the ${{datasource}} variable")
                exprs.append((p.get("title"), t.get("expr", "")))
        walk(p.get("panels", []))
walk(dash.get("panels", []))
for v in dash.get("templating", {}).get("list", []):
    if v.get("type") == "query":
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q
        # label_values(SELECTOR, label): check the selector.
        if q.startswith("label_values(") and q.endswith(")"):
            exprs.append((f"variable {v['name']}", q[len("label_values("):-1].rsplit(",", 1)[0]))
        else:
            error(f"variable {v.get('name')}: not a label_values() query")

rules = [{"record": f"dashboard:query_{i}", "expr": substitute(e), "labels": {"panel": title}}
         for i, (title, e) in enumerate(exprs)]
with open(out, "w") as f:
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
print(f"{path}: {len(ids)} panels, {len(exprs)} queries")
sys.exit(1 if failed else 0)
PY
promtool check rules "$tmp/dashboard_rules.yaml" >/dev/null ||
  { promtool check rules "$tmp/dashboard_rules.yaml"; echo "ERROR $dashboard: a query is not valid PromQL" >&2; exit 1; }

# Metric names, sessiond_raft fields and runbook anchors.
python3 - "$rules" "$tmp/dashboard_rules.yaml" "$names_file" <<'PY'
import os
import re
import sys

import yaml

rules_path, dash_rules, names_file = sys.argv[1], sys.argv[2], sys.argv[3]
failed = False
def error(msg):
    global failed
    print(f"ERROR {msg}")
    failed = True

source = open("node/src/metrics.rs").read()
fields = set(re.findall(r'\bg\(\s*"([a-z_]+)"', source))
# Not the node's: Prometheus's own, and node_exporter's for the data disk.
known = {"up", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"}
if names_file:
    for line in open(names_file):
        line = line.split("#", 1)[0].strip()
        if line:
            known.add(line)
else:
    for kind, name in re.findall(
            r'\b(HistogramOpts::new|Opts::new|IntCounter::new|IntGauge::new)\(\s*"([a-z_]+)"', source):
        known.add(f"sessiond_{name}")
        if kind == "HistogramOpts::new":
            known.update(f"sessiond_{name}{s}" for s in ("_bucket", "_sum", "_count"))
    if len(known) < 10:
        error("node/src/metrics.rs: too few metric names found; has the registration changed?")

def exprs_of(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    for group in doc["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("labels", {}).get("panel") or rule.get("record")
            yield name, rule["expr"], rule

# A metric name is an identifier not followed by "(" (a function) and not inside {...} or
# a quoted string, and not a PromQL keyword.
keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan", "atan2", "sum", "min", "max", "avg",
            "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
def metric_names(expr):
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r'\{[^}]*\}', '{}', expr)
    expr = re.sub(r'\[[^\]]*\]', '[]', expr)
    expr = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', r'\1', expr)
    for m in re.finditer(r'(?<![\w:.])([a-zA-Z_:][\w:]*)\b(?!\s*\()', expr):
        name = m.group(1)
        if name.lower() not in keywords and not re.fullmatch(r'\d+[smhdwy]', name):
            yield name

def fields_of(expr):
    for m in re.finditer(r'sessiond_raft\s*\{([^}]*)\}', expr):
        for op, value in re.findall(r'field\s*(=~|=)\s*"([^"]*)"', m.group(1)):
            yield from (value.split("|") if op == "=~" else [value])

used = 0
for path, label in ((rules_path, rules_path), (dash_rules, "deploy/grafana/sessiond.json")):
    for name, expr, _ in exprs_of(path):
        for metric in metric_names(expr):
            used += 1
            if metric not in known:
                error(f"{label}: {name}: metric {metric} is not exported")
        for field in fields_of(expr):
            if field not in fields:
                error(f"{label}: {name}: sessiond_raft has no field {field!r} (fields: {sorted(fields)})")

# runbook_url anchors against the headings of the runbook.
runbook = "docs/operations.md"
def anchor(heading):
    a = heading.strip().lower()
    a = re.sub(r'[^\w\- ]', '', a)
    return a.replace(" ", "-")
anchors = {anchor(h) for h in re.findall(r'^#+\s+(.*)$', open(runbook).read(), re.M)}
alerts = 0
for name, _, rule in exprs_of(rules_path):
    if "alert" not in rule:
        continue
    alerts += 1
    ann = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        if key not in ann:
            error(f"{rules_path}: {name}: no {key} annotation")
    if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
        error(f"{rules_path}: {name}: severity is not critical, warning or info")
    if "for" not in rule:
        error(f"{rules_path}: {name}: no for:")
    url = ann.get("runbook_url", "")
    target, _, frag = url.partition("#")
    if target != "docs/operations.md" or anchor(frag) != frag or frag not in anchors:
        error(f"{rules_path}: {name}: runbook_url {url!r} names no heading of {runbook}")

print(f"metric names: {used} uses checked against "
      f"{names_file or 'node/src/metrics.rs'}; {alerts} runbook anchors found in {runbook}")
sys.exit(1 if failed else 0)
PY
echo "check.sh: all checks passed"
