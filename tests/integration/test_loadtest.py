"""A short real load-test sweep against the server, closed and open loop, with every output written."""

from __future__ import annotations

import json

import pytest

from tests.images import text_line
from trocr_loadtest import cli
from trocr_loadtest.load import LoadSpec, run_load

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
    assert report["capacity_plan"]["replicas"] >= 1
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 3
    assert (tmp_path / "throughput_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "| concurrency 4 |" in out and "replicas" in out


def test_open_loop_keeps_its_rate_and_counts_errors(tiny):
    images = [text_line("open loop"), b"not an image"]
    spec = LoadSpec(rate_per_s=40, duration_s=2, warmup_s=0.3, max_new_tokens=4, seed=3)
    result = run_load(tiny.server.grpc_url, images, spec)
    errors = [r for r in result.records if r.error]
    assert 40 <= len(result.records) <= 130  # about 80 arrivals at 40/s over 2 s
    assert errors and {r.error for r in errors} == {"InvalidInputError"}
    assert any(r.error is None for r in result.records)
