"""The operators' kit in exporter/: dashboard queries, rules, systemd unit, web-config example, README."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lvstop.exporter.auth import Role, load_web_config

KIT = Path(__file__).parents[2] / "exporter"
GOLDEN = Path(__file__).parent / "golden"
PROMTOOL = "/usr/bin/promtool"
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def emitted() -> dict[str, set[str]]:
    """Metric name -> label names, over every golden page (demo and a real kernel)."""
    out: dict[str, set[str]] = {}
    for page in GOLDEN.glob("*.prom"):
        for fam in text_string_to_metric_families(page.read_text()):
            for s in fam.samples:
                out.setdefault(s.name, set()).update(s.labels)
    return out


def recorded() -> dict[str, set[str]]:
    """Recording rules -> the labels of the series they are computed from."""
    rules = yaml.safe_load((KIT / "prometheus" / "lvstop.rules.yml").read_text())
    metrics = emitted()
    out: dict[str, set[str]] = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                sources = re.findall(r"\blvstop[a-zA-Z0-9_:]*", rule["expr"])
                labels = set().union(*(metrics.get(s.split("[")[0], out.get(s, set())) for s in sources))
                out[rule["record"]] = labels
    return out


def dashboard_queries() -> list[str]:
    dash = json.loads((KIT / "grafana" / "lvstop-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"])
            assert m, var["definition"]
            exprs.append(m.group(1))
            exprs.append(f"{m.group(1)} == on() group_left({m.group(2)}) vector(0)")  # checks the label too
    return exprs


def promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, ready for promtool."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


SELECTOR = re.compile(r"\b(lvstop[a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def test_every_dashboard_query_uses_only_emitted_metrics_and_labels() -> None:
    known = {**emitted(), **recorded()}
    used_metrics = 0
    for expr in dashboard_queries():
        for name, selector in SELECTOR.findall(expr):
            assert name in known, f"{name} is not emitted by the exporter nor recorded by the rules ({expr})"
            used_metrics += 1
            for label in MATCHER.findall(selector or ""):
                assert label in known[name] | TARGET_LABELS, f"{name} has no label {label} ({expr})"
        all_labels = set().union(*known.values()) | TARGET_LABELS
        for group in GROUPING.findall(expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in all_labels, f"no metric has label {label} ({expr})"
    assert used_metrics >= 30


def test_every_legend_names_a_real_label() -> None:
    dash = json.loads((KIT / "grafana" / "lvstop-dashboard.json").read_text())
    labels = set().union(*emitted().values()) | TARGET_LABELS
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")):
                assert label in labels, (panel["title"], label)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:q{i}", "expr": promql(e)}
                    for i, e in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    res = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_rules_check_and_unit_tests_pass() -> None:
    rules = KIT / "prometheus" / "lvstop.rules.yml"
    res = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr
    res = subprocess.run(
        [PROMTOOL, "test", "rules", "lvstop.rules.test.yml"],
        cwd=KIT / "prometheus",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_every_alert_has_a_unit_test_and_uses_emitted_metrics() -> None:
    rules = yaml.safe_load((KIT / "prometheus" / "lvstop.rules.yml").read_text())
    tests = yaml.safe_load((KIT / "prometheus" / "lvstop.rules.test.yml").read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", []) if a["exp_alerts"]}
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == tested
    known = {**emitted(), **recorded(), "up": set()}
    for g in rules["groups"]:
        for r in g["rules"]:
            for name in re.findall(r"(?<![\"\w])(lvstop[a-zA-Z0-9_:]*)", r["expr"]):
                assert name in known, name


def test_every_metric_is_documented_in_the_readme() -> None:
    readme = (KIT / "README.md").read_text()
    for name, labels in emitted().items():
        assert f"`{name}`" in readme, f"{name} is not documented in exporter/README.md"
        for label in labels:
            assert f"`{label}`" in readme, f"label {label} of {name} is not documented"


def test_systemd_unit_is_hardened(tmp_path: Path) -> None:
    unit: dict[str, list[str]] = {}
    for line in (KIT / "lvstop-exporter.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            unit.setdefault(k, []).append(v)
    assert unit["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"] and unit["AmbientCapabilities"] == [
        "CAP_NET_ADMIN"
    ]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["ProtectSystem"] == ["strict"]
    assert unit["ExecStart"][0].split()[0].endswith("/lvstop-exporter")
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # the exporter reloads on SIGHUP
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is needed to rate the unit's exposure")
    copy = tmp_path / "lvstop-exporter.service"
    copy.write_text((KIT / "lvstop-exporter.service").read_text())
    res = subprocess.run(
        [analyze, "security", "--offline=yes", str(copy)], capture_output=True, text=True, timeout=60
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert m and float(m.group(1)) <= 2.5, res.stdout[-500:] + res.stderr


def test_web_config_example_loads() -> None:
    cfg = load_web_config(KIT / "web-config.example.yml")
    assert cfg.auth and set(cfg.roles.values()) == set(Role) and set(cfg.roles) <= set(cfg.users)


def _walk(obj: Any) -> list[Any]:
    out = [obj]
    if isinstance(obj, dict):
        for v in obj.values():
            out.extend(_walk(v))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_walk(v))
    return out


def test_dashboard_uses_a_datasource_variable_only() -> None:
    dash = json.loads((KIT / "grafana" / "lvstop-dashboard.json").read_text())
    sources = [x["datasource"] for x in _walk(dash) if isinstance(x, dict) and "datasource" in x]
    assert sources and all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources)
