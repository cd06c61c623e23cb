"""Load-test statistics and capacity arithmetic against hand-computed values."""

import math

import numpy as np
import pytest

from trocr_loadtest.capacity import SweepPoint, plan_capacity, render_plan
from trocr_loadtest.cli import failing_settings, still_rising
from trocr_loadtest.cli import main as cli_main
from trocr_loadtest.report import render_sweep, write_csv
from trocr_loadtest.server_metrics import ServerFigures
from trocr_loadtest.stats import RequestRecord, percentile, summarize


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0, 1.0), (50, 2.5), (25, 1.75), (90, 3.7), (100, 4.0)],  # ranks (n-1)q/100 over [1, 2, 3, 4]
)
def test_percentile_interpolates_between_ranks(q, expected):
    assert percentile([4.0, 1.0, 3.0, 2.0], q) == pytest.approx(expected)


def test_percentile_agrees_with_numpy():
    values = list(np.random.default_rng(0).exponential(size=101))
    for q in (50, 90, 95, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_nothing_is_nan():
    assert math.isnan(percentile([], 50))


def record(latency_s, images=1, tokens=10, error=None):
    return RequestRecord(start_s=0.0, latency_s=latency_s, images=images, tokens=tokens, error=error)


def test_summary_throughput_goodput_and_errors():
    records = [
        record(0.2),
        record(0.4),
        record(0.9),
        record(1.5, images=2, tokens=20),
        record(0.1, error="ServerError"),
    ]
    summary = summarize(records, duration_s=10.0, slo_s=0.8)
    assert (summary.requests, summary.succeeded) == (5, 4)
    assert summary.images_per_s == pytest.approx(5 / 10)  # failed requests do not count
    assert summary.tokens_per_s == pytest.approx(50 / 10)
    assert summary.goodput_images_per_s == pytest.approx(2 / 10)  # only 0.2 s and 0.4 s meet 0.8 s
    assert summary.latency_s["p50"] == pytest.approx(0.65)
    assert summary.latency_s["max"] == 1.5
    assert summary.latency_s["mean"] == pytest.approx(0.75)
    assert summary.errors == {"ServerError": 1}


def point(setting, images_per_s, p95_s, error_rate=0.0):
    return SweepPoint(setting, images_per_s, {"p50": p95_s / 2, "p95": p95_s, "p99": p95_s * 1.2}, error_rate)


def test_capacity_takes_the_best_point_within_the_slo():
    points = [point("c1", 3.0, 0.3), point("c4", 4.5, 0.7), point("c16", 4.8, 3.5)]
    plan = plan_capacity(points, slo_s=0.8, target_images_per_s=200, headroom=0.2)
    assert plan.best.setting == "c4"
    assert plan.per_replica_images_per_s == 4.5
    assert plan.replicas == math.ceil(200 * 1.2 / 4.5) == 54


def test_capacity_exact_division_does_not_round_up_twice():
    plan = plan_capacity([point("c1", 5.0, 0.1)], slo_s=1.0, target_images_per_s=100, headroom=0.0)
    assert plan.replicas == 20


def test_points_with_errors_are_not_eligible():
    points = [point("c1", 3.0, 0.3), point("c8", 6.0, 0.5, error_rate=0.05)]
    assert plan_capacity(points, slo_s=0.8, target_images_per_s=30).best.setting == "c1"


def test_no_point_meets_the_slo():
    plan = plan_capacity([point("c1", 3.0, 2.0)], slo_s=0.8, target_images_per_s=30)
    assert plan.best is None and plan.replicas is None
    assert "no sweep point meets it" in render_plan(plan)


def test_other_percentiles_can_be_the_slo():
    points = [point("c1", 3.0, 0.3), point("c4", 4.5, 0.7)]
    assert plan_capacity(points, slo_s=0.8, target_images_per_s=10, percentile="p99").best.setting == "c1"


def test_server_figures_are_deltas_between_scrapes():
    def samples(steps, rows, encoder_calls, encoder_images, requests, queue_us):
        return {
            ("trocr_decoder_batch_size_count", (("model", "scheduler"),)): steps,
            ("trocr_decoder_batch_size_sum", (("model", "scheduler"),)): rows,
            ("trocr_onnx_batch_size_count", (("model", "encoder"),)): encoder_calls,
            ("trocr_onnx_batch_size_sum", (("model", "encoder"),)): encoder_images,
            ("nv_inference_request_success_total", (("model", "trocr"), ("version", "1"))): requests,
            ("nv_inference_queue_duration_us_total", (("model", "trocr"), ("version", "1"))): queue_us,
        }

    figures = ServerFigures.between(samples(10, 20, 2, 4, 5, 1000), samples(30, 180, 6, 20, 25, 41000))
    assert figures.decoder_steps == 20 and figures.decoder_mean_batch == 8.0
    assert figures.encoder_mean_batch == 4.0
    assert figures.trocr_queue_mean_ms == pytest.approx(2.0)  # 40 ms over 20 requests


def test_reports(tmp_path):
    rows = [("concurrency 1", summarize([record(0.2), record(0.3)], 1.0, slo_s=0.25), None)]
    table = render_sweep(rows)
    assert "| concurrency 1 | 2 | 2 | 2.00 |" in table
    write_csv(tmp_path / "s.csv", rows)
    header, line = (tmp_path / "s.csv").read_text().splitlines()
    assert header.startswith("setting,requests,succeeded,images_per_s") and line.startswith("concurrency 1,2,2,2.0000")


def _point(setting: str, images_per_s: float, error_rate: float = 0.0) -> SweepPoint:
    return SweepPoint(setting, images_per_s, {"p95": 0.1}, error_rate)


def test_a_closed_loop_sweep_still_rising_at_its_top_is_flagged():
    rising = [_point("concurrency 8", 3.0), _point("concurrency 16", 3.6)]
    flat = [_point("concurrency 8", 3.0), _point("concurrency 16", 3.1)]
    assert "still rises at concurrency 16 (3.00 -> 3.60" in still_rising(rising, closed_loop=True)
    assert still_rising(flat, closed_loop=True) is None
    assert still_rising(rising, closed_loop=False) is None


def test_settings_over_the_error_bound_are_named():
    points = [_point("rate 2/s", 2.0, 0.0), _point("rate 8/s", 3.0, 0.25)]
    assert failing_settings(points, 0.01) == ["rate 8/s: 25.0% errors"]


def test_no_load_is_sent_to_a_server_that_is_not_ready():
    from trocr_serving.launcher import free_port

    assert cli_main(["--url", f"127.0.0.1:{free_port()}", "--no-plot"]) == 2
