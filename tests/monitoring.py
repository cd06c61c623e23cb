"""The monitoring files' PromQL: every expression of the alerts, the autoscaler's adapter rule and the dashboard,
and the metric names they read (checked for syntax by promtool in tests/unit, against a live server in
tests/integration)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MONITORING = DEPLOY / "monitoring"
DASHBOARD = MONITORING / "grafana" / "trocr-triton.json"
# Grafana's and the adapter's template variables, as they expand for one pod of one job.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".+"}
ADAPTER_TEMPLATE = {"<<.GroupBy>>": "namespace, pod", "<<.LabelMatchers>>": 'namespace="ocr",pod=~"trocr-.*"'}
SYNTHESIZED = {"up"}  # written by Prometheus itself for each target


def _expand(text: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        text = text.replace(name, value)
    return text


def alert_expressions() -> dict[str, str]:
    (group,) = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for rule in group["rules"]}


def adapter_rules() -> list[dict]:
    return yaml.safe_load((MONITORING / "prometheus-adapter.yaml").read_text())["rules"]


def adapter_expressions() -> dict[str, str]:
    return {rule["name"]["as"]: _expand(rule["metricsQuery"], ADAPTER_TEMPLATE) for rule in adapter_rules()}


def dashboard_expressions() -> dict[str, str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {
        f"{panel['title']} {target['refId']}": _expand(target["expr"], GRAFANA_VARIABLES)
        for panel in panels
        for target in panel["targets"]
    }


def all_expressions() -> dict[str, str]:
    return {**alert_expressions(), **adapter_expressions(), **dashboard_expressions()}


def metric_names(expression: str) -> set[str]:
    """The metric names an expression reads (the families' names: a histogram's _bucket, _sum and _count are
    what a server exports, as they are written)."""
    without_matchers = re.sub(r"\{[^}]*\}", "", expression)  # label values are not names
    return {
        name
        for name in re.findall(r"\b[a-z_]+\b", without_matchers)
        if name.startswith(("trocr_", "nv_")) or name in SYNTHESIZED
    }
