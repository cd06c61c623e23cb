"""The Prometheus config, the alert rules (with their unit tests) and every PromQL expression of the alerts, the
autoscaler's adapter rule and the Grafana dashboard, checked by Prometheus's own promtool."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests.debian_tools import debian_tool
from tests.monitoring import DASHBOARD, DEPLOY, MONITORING, adapter_rules, all_expressions

# Debian builds Prometheus without Kubernetes service discovery; this is how its promtool says so.
NO_KUBERNETES_SD = "field kubernetes_sd_configs not found"


@pytest.fixture(scope="module")
def promtool():
    return debian_tool("prometheus", "usr/bin/promtool")


def run(promtool, *argv, cwd=MONITORING) -> subprocess.CompletedProcess:
    return subprocess.run([str(promtool), *map(str, argv)], cwd=cwd, capture_output=True, text=True)


def test_the_scrape_config_is_valid(promtool, tmp_path):
    checked = run(promtool, "check", "config", "prometheus.yml")
    if checked.returncode != 0:  # a promtool without Kubernetes discovery: that is all it may object to
        assert NO_KUBERNETES_SD in checked.stdout + checked.stderr, checked.stdout + checked.stderr
        config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        for job in config["scrape_configs"]:  # the rest of the config, discovery swapped for a file's
            assert [sd["role"] for sd in job.pop("kubernetes_sd_configs")] == ["pod"]
            job["file_sd_configs"] = [{"files": ["targets.json"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        (tmp_path / "alerts.yml").write_text((MONITORING / "alerts.yml").read_text())
        checked = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout  # the alerts it loads


def test_the_alert_rules_are_valid_and_pass_their_unit_tests(promtool):
    checked = run(promtool, "check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", "alerts_test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    alerts = {rule["alert"] for rule in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]}
    tested_alerts = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts_test.yml").read_text()))
    assert tested_alerts == alerts  # every alert has a test


def test_a_failing_rule_test_fails(promtool, tmp_path):
    """The rule tests can fail: the error-rate alert expected below 1% of errors, where it must stay silent."""
    silent = "eval_time: 20m\n        alertname: TrocrHighErrorRate\n        exp_alerts: []"
    tests = (MONITORING / "alerts_test.yml").read_text()
    assert silent in tests
    firing = silent.replace("[]", "[{exp_labels: {severity: page}}]")
    (tmp_path / "alerts.yml").write_text((MONITORING / "alerts.yml").read_text())
    (tmp_path / "alerts_test.yml").write_text(tests.replace(silent, firing))
    assert run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path).returncode != 0


def test_every_dashboard_and_autoscaler_expression_is_valid_promql(promtool, tmp_path):
    expressions = all_expressions()
    rules = [{"record": f"check:expression_{i}", "expr": expr} for i, expr in enumerate(expressions.values())]
    (tmp_path / "expressions.yml").write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    checked = run(promtool, "check", "rules", "expressions.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_the_dashboard_has_the_panels_operators_need():
    titles = [panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]]
    for wanted in (
        "Throughput",
        "Request latency",
        "Batch sizes",
        "Active and queued sequences",
        "Errors and refusals",
    ):
        assert wanted in titles


def test_the_autoscaler_scales_on_the_adapters_metric():
    hpa = yaml.safe_load((DEPLOY / "k8s" / "base" / "hpa.yaml").read_text())
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] in {rule["name"]["as"] for rule in adapter_rules()}
