"""Real load tests against the server: the default capacity plan (open-loop search), a closed-loop sweep,
and the open-loop generator, with every output written."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from tests.images import text_line
from trocr_build.repository import ServingOptions, build_repository
from trocr_loadtest import cli
from trocr_loadtest.load import LoadSpec, run_load
from trocr_serving.launcher.server import TritonServer

pytestmark = pytest.mark.integration


def test_closed_loop_sweep_writes_reports(tiny, tmp_path, capsys):
    args = [
        "--url", tiny.server.grpc_url, "--metrics-url", tiny.server.metrics_url,
        "--concurrency", "1,4", "--duration-s", "2", "--warmup-s", "0.5",
        "--max-new-tokens", "8", "--ignore-eos", "--slo-ms", "2000", "--target-rate", "10",
        "--output-dir", str(tmp_path),
    ]  # fmt: skip
    assert cli.main(args) == 0
    report = json.loads((tmp_path / "sweep.json").read_text())
    settings = report["settings"]
    assert [s["setting"] for s in settings] == ["concurrency 1", "concurrency 4"]
    for setting in settings:
        summary = setting["summary"]
        assert summary["succeeded"] == summary["requests"] > 0 and summary["errors"] == {}
        assert summary["tokens_per_s"] == pytest.approx(8 * summary["images_per_s"])
        assert setting["server"]["decoder_steps"] > 0
    assert report["capacity_plan"]["replicas"] >= 1 and report["capacity_plan"]["closed_loop"]
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 3
    assert (tmp_path / "rate_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "| concurrency 4 |" in out and "optimistic" in out


def setting_figures(requests: list[dict], phase: str, setting: str) -> tuple[float, float]:
    """(error rate, p95 latency in seconds) of one measured setting, from the raw per-request output."""
    rows = [r for r in requests if r["phase"] == phase and r["setting"] == setting]
    ok = [int(r["latency_us"]) / 1e6 for r in rows if not r["error"]]
    return 1 - len(ok) / len(rows), float(np.percentile(ok, 95))


@pytest.fixture(scope="module")
def deep_queue(tmp_path_factory):
    """random:tiny with a queue of 64 in front of `trocr`: bursts wait instead of being refused, so the knee is
    the server's capacity, not Poisson noise against a queue of 16 (this shared machine's speed varies by 10%
    from minute to minute, the width of the search's last step)."""
    repository = tmp_path_factory.mktemp("deep-queue")
    options = ServingOptions(trocr_max_queue_size=64)
    build_repository("random:tiny", repository, cache_dir=tmp_path_factory.getbasetemp() / "models", options=options)
    with TritonServer(repository, log_file=repository / "tritonserver.log", exit_timeout_s=10) as server:
        yield server


# The 1.3x check needs measurements longer than this machine's capacity swings (10-15% within a minute:
# random:tiny served 117 then 138 requests/s a minute apart); TROCR_LONG_TESTS=1 runs it with 5 s windows.
LONG = os.environ.get("TROCR_LONG_TESTS") == "1"


def test_the_default_plan_agrees_with_open_loop_runs_at_its_rate_and_above(deep_queue, tmp_path):
    """The default mode (open-loop rate search; short windows unless TROCR_LONG_TESTS=1): the planned rate meets
    the SLO when measured again, and the raw per-request output says the same; with long windows, 1.3x it
    does not."""
    slo_s, max_error_rate = 1.0, 0.01
    args = [
        "--url", deep_queue.grpc_url, "--metrics-url", deep_queue.metrics_url,
        "--max-new-tokens", "16", "--ignore-eos", "--slo-ms", str(slo_s * 1e3), "--target-rate", "500",
        "--duration-s", "3", "--warmup-s", "1", "--measurement-interval-s", "5" if LONG else "2",
        "--max-error-rate", str(max_error_rate), "--output-dir", str(tmp_path),
    ]  # fmt: skip
    assert cli.main(args) == 0
    report = json.loads((tmp_path / "sweep.json").read_text())
    confirmation, plan = report["confirmation"], report["capacity_plan"]
    assert confirmation["meets_slo"] and plan["best"]["offered_per_s"] == pytest.approx(
        confirmation["planned_rate_per_s"]
    )
    assert confirmation["over_rate_per_s"] == pytest.approx(1.3 * confirmation["planned_rate_per_s"])
    assert plan["replicas"] == math.ceil(500 * 1.2 / plan["per_replica_images_per_s"] - 1e-9)
    phases = [s["phase"] for s in report["settings"]]
    assert phases[0] == "calibrate" and phases[-2:] == ["plan", "confirm"] and "search" in phases
    assert all(s["stable"] is not None for s in report["settings"][1:])  # every rate measured until stable or not

    with open(tmp_path / "requests.csv") as handle:
        requests = list(csv.DictReader(handle))
    assert len(requests) == sum(s["summary"]["requests"] for s in report["settings"])
    planned, over = report["settings"][-2]["setting"], report["settings"][-1]["setting"]
    planned_errors, planned_p95_s = setting_figures(requests, "plan", planned)
    assert planned_errors <= max_error_rate and planned_p95_s <= slo_s
    over_errors, over_p95_s = setting_figures(requests, "confirm", over)
    raw_misses = over_errors > max_error_rate or over_p95_s > slo_s
    assert not (raw_misses and confirmation["over_meets_slo"])  # the raw rows agree with the CLI's verdict
    if LONG:
        assert confirmation["confirmed"] and not confirmation["over_meets_slo"]

    metadata = report["metadata"]
    assert metadata["model"] == "random:tiny" and metadata["server"]["version"]
    assert len(metadata["code"]["git_revision"]) == 40 and metadata["load_generator_machine"]["cpus"] >= 1
    assert metadata["model_configs"]["trocr"]["dynamicBatching"]["defaultQueuePolicy"]
    with open(tmp_path / "sweep.csv") as handle:
        assert {"Request Rate", "Inferences/Second", "p95 latency", "Avg latency"} <= set(next(csv.reader(handle)))


def test_open_loop_keeps_its_rate_and_counts_errors(tiny):
    images = [text_line("open loop"), b"not an image"]
    spec = LoadSpec(rate_per_s=40, duration_s=2, warmup_s=0.3, max_new_tokens=4, seed=3)
    result = run_load(tiny.server.grpc_url, images, spec)
    errors = [r for r in result.records if r.error]
    assert 40 <= len(result.records) <= 130  # about 80 arrivals at 40/s over 2 s
    assert errors and {r.error for r in errors} == {"InvalidInputError"}
    assert any(r.error is None for r in result.records)
