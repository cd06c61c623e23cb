"""Load-test statistics and capacity arithmetic against hand-computed values."""

import csv
import math

import numpy as np
import pytest

from trocr_loadtest.capacity import RateSearch, Slo, SweepPoint, plan_capacity, render_plan, search_rate
from trocr_loadtest.cli import failing_settings, still_rising
from trocr_loadtest.cli import main as cli_main
from trocr_loadtest.load import LoadSpec, Measurement, Stability, is_stable, window_figures
from trocr_loadtest.metadata import code_revision, machine
from trocr_loadtest.report import latency_axis_top_s, plot, render_sweep, write_csv, write_requests_csv
from trocr_loadtest.server_metrics import ServerFigures
from trocr_loadtest.stats import RequestRecord, percentile, summarize
from trocr_loadtest.sweep import Measured


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


def point(setting, images_per_s, p95_s, error_rate=0.0, offered=None, stable=None):
    latency = {"p50": p95_s / 2, "p95": p95_s, "p99": p95_s * 1.2}
    return SweepPoint(setting, images_per_s, latency, error_rate, offered, stable)


SLO = Slo(0.8, "p95", max_error_rate=0.0)


def test_capacity_takes_the_best_point_within_the_slo():
    points = [point("r3", 3.0, 0.3, offered=3), point("r4.5", 4.5, 0.7, offered=4.5), point("r5", 4.8, 3.5, offered=5)]
    plan = plan_capacity(points, SLO, target_images_per_s=200, headroom=0.2)
    assert plan.best.setting == "r4.5"
    assert plan.per_replica_images_per_s == 4.5
    assert plan.replicas == math.ceil(200 * 1.2 / 4.5) == 54
    assert not plan.closed_loop and "closed-loop" not in render_plan(plan)


def test_capacity_exact_division_does_not_round_up_twice():
    plan = plan_capacity([point("r5", 5.0, 0.1, offered=5)], Slo(1.0), target_images_per_s=100, headroom=0.0)
    assert plan.replicas == 20


def test_points_with_errors_or_unstable_are_not_eligible():
    points = [point("r3", 3.0, 0.3), point("r6", 6.0, 0.5, error_rate=0.05), point("r7", 7.0, 0.5, stable=False)]
    assert plan_capacity(points, SLO, target_images_per_s=30).best.setting == "r3"
    assert plan_capacity(points, Slo(0.8, max_error_rate=0.1), target_images_per_s=30).best.setting == "r6"


def test_no_point_meets_the_slo():
    plan = plan_capacity([point("c1", 3.0, 2.0)], SLO, target_images_per_s=30)
    assert plan.best is None and plan.replicas is None
    assert "no point meets it" in render_plan(plan)


def test_a_plan_from_a_closed_loop_sweep_says_it_is_optimistic():
    plan = plan_capacity([point("concurrency 4", 3.0, 0.3)], SLO, target_images_per_s=30)
    assert plan.closed_loop and "optimistic" in render_plan(plan)


def test_other_percentiles_can_be_the_slo():
    points = [point("c1", 3.0, 0.3), point("c4", 4.5, 0.7)]
    assert plan_capacity(points, Slo(0.8, "p99"), target_images_per_s=10).best.setting == "c1"


def knee_server(capacity_per_s: float, slo: Slo):
    """A fake replica: latency 0.1 s up to 80% of capacity, past the SLO above; records every rate asked."""
    asked = []

    def measure(rate: float) -> SweepPoint:
        asked.append(rate)
        p95_s = 0.1 if rate <= 0.8 * capacity_per_s else 2 * slo.latency_s
        return point(f"rate {rate:g}/s", min(rate, capacity_per_s), p95_s, offered=rate, stable=True)

    return measure, asked


@pytest.mark.parametrize("start_per_s", [1.0, 10.0, 100.0])
def test_the_rate_search_brackets_the_knee_within_the_resolution(start_per_s):
    measure, asked = knee_server(capacity_per_s=10.0, slo=SLO)
    points = search_rate(RateSearch(start_per_s, resolution=0.1), SLO, measure)
    passing = max(p.offered_per_s for p in points if SLO.met_by(p))
    failing = min(p.offered_per_s for p in points if not SLO.met_by(p))
    assert passing <= 8.0 < failing <= 1.1 * passing  # the knee is at 8/s
    assert len(asked) <= 12 and asked[0] == start_per_s


def test_the_rate_search_gives_up_below_its_floor():
    def never(rate):
        return point(f"rate {rate:g}/s", rate, 5.0, offered=rate, stable=True)

    points = search_rate(RateSearch(1.0, min_per_s=0.1), SLO, never)
    assert [p.offered_per_s for p in points] == [1.0, 0.5, 0.25, 0.125]
    assert plan_capacity(points, SLO, 10).best is None


def window_records(latencies_per_window, window_s=1.0, error=None):
    """Records completing in consecutive windows from t=0, each with the given latency."""
    records = []
    for index, latencies in enumerate(latencies_per_window):
        for k, latency in enumerate(latencies):
            finish = index * window_s + (k + 0.5) * window_s / len(latencies)
            records.append(RequestRecord(finish - latency, latency, 1, 1, error))
    return records


def test_windows_agreeing_within_the_tolerance_are_stable():
    steady = window_figures(window_records([[0.2] * 10, [0.21] * 10, [0.2] * 11]), 0.0, 1.0, 3)
    assert [f.completions for f in steady] == [10, 10, 11]
    assert is_stable(steady, 0.1)
    growing = window_figures(window_records([[0.2] * 10, [0.4] * 10, [0.8] * 10]), 0.0, 1.0, 3)
    assert not is_stable(growing, 0.1)
    assert not is_stable(window_figures([], 0.0, 1.0, 3), 0.1)  # windows with no completion
    # In open loop the completions must keep up with the arrivals: 10 a window is steady at 10/s, not at 40/s.
    assert is_stable(steady, 0.1, arrivals=10.0) and not is_stable(steady, 0.1, arrivals=40.0)


def test_a_few_requests_per_window_differ_by_sampling_noise_not_instability():
    # 3 to 6 completions per window at 4/s, latencies spread 0.1-0.3 s: beyond 10%, within 2 standard errors.
    few = [[0.1, 0.3, 0.2], [0.1, 0.2, 0.3, 0.1, 0.3, 0.2], [0.3, 0.1, 0.2, 0.25]]
    figures = window_figures(window_records(few), 0.0, 1.0, 3)
    assert is_stable(figures, 0.1)
    rising = [[0.1, 0.3, 0.2], [0.2, 0.4, 0.3], [1.1, 1.3, 1.2]]
    assert not is_stable(window_figures(window_records(rising), 0.0, 1.0, 3), 0.1)
    bursts = [[0.1, 0.3, 0.2], [1.1, 1.3, 1.2], [0.2, 0.4, 0.3]]  # up and down: not a growing queue
    assert is_stable(window_figures(window_records(bursts), 0.0, 1.0, 3), 0.1)


def test_an_open_loop_plan_counts_the_offered_rate_less_errors():
    noisy = point("rate 4/s", 3.5, 0.2, error_rate=0.01, offered=4.0)
    assert plan_capacity([noisy], Slo(0.8), target_images_per_s=10).per_replica_images_per_s == pytest.approx(3.96)


def measurement(rule):
    m = Measurement(LoadSpec(rate_per_s=10, stability=rule))
    m.open(0.0)
    return m


def test_a_measurement_stops_at_the_first_stable_windows_and_keeps_only_those():
    m = measurement(Stability(window_s=1.0, tolerance=0.1, windows=2, max_windows=5))
    for record in window_records([[0.2] * 10, [1.0] * 10, [1.0] * 10, [1.0] * 10]):
        m.add(record)
    assert not m.done(1.5) and not m.done(2.0)  # windows 0-1: latency rising
    assert m.done(3.0) and m.stable and m.windows == 3
    assert len(m.records) == 20 and m.duration_s(10.0) == 2.0


def test_a_growing_queue_is_unstable_at_the_window_limit_or_once_past_the_bound():
    latencies = [[0.2 * 2**k] * 10 for k in range(6)]
    m = measurement(Stability(window_s=1.0, tolerance=0.1, windows=3, max_windows=4))
    for record in window_records(latencies):
        m.add(record)
    assert not m.done(3.0) and m.done(4.0) and m.stable is False
    bounded = measurement(Stability(window_s=1.0, tolerance=0.1, windows=3, max_windows=10, latency_bound_s=0.5))
    for record in window_records(latencies):
        bounded.add(record)
    assert bounded.done(3.0) and bounded.stable is False  # 0.8 s mean, rising, past 0.5 s


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


def measured(setting="rate 2/s", latencies=(0.2, 0.3), errors=(), rate=2.0, stable=True):
    records = [record(v) for v in latencies] + [record(0.01, error=e) for e in errors]
    spec = LoadSpec(rate_per_s=rate)
    summary = summarize(records, 1.0, slo_s=0.25)
    server = {"trocr_queue_mean_ms": 1.5, "trocr_compute_mean_ms": 200.0, "decoder_mean_batch": 3.0}
    return Measured(setting, "search", spec, summary, server | {"encoder_mean_batch": 1.0}, stable, records, 4, 5.0)


def test_reports(tmp_path):
    rows = [measured()]
    assert "| search | rate 2/s | 2 | 2 | 2.00 |" in render_sweep(rows)
    write_csv(tmp_path / "s.csv", rows)
    with open(tmp_path / "s.csv") as handle:
        (line,) = csv.DictReader(handle)
    assert (line["Request Rate"], line["Concurrency"], line["Inferences/Second"]) == ("2.0000", "", "2.0000")
    assert line["p50 latency"] == "250000" and line["Avg latency"] == "250000"  # microseconds, like perf_analyzer
    assert (line["Server Queue"], line["Server Compute Infer"], line["Stable"]) == ("1500", "200000", "yes")
    write_requests_csv(tmp_path / "r.csv", rows)
    with open(tmp_path / "r.csv") as handle:
        assert [r["latency_us"] for r in csv.DictReader(handle)] == ["200000", "300000"]


def test_the_latency_axis_keeps_the_points_under_the_slo_readable(tmp_path):
    assert latency_axis_top_s([0.1, 0.7, 45.0], slo_s=0.8) == pytest.approx(1.2)
    assert latency_axis_top_s([0.1, 0.79, 45.0], slo_s=0.8) == pytest.approx(1.2)
    assert latency_axis_top_s([5.0], slo_s=0.1) == pytest.approx(0.15)
    rows = [measured(rate=1.0), measured(latencies=(40.0,), rate=4.0, stable=False)]
    plot(tmp_path / "p.png", rows, 0.8, "test")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _point(setting: str, images_per_s: float) -> SweepPoint:
    return SweepPoint(setting, images_per_s, {"p95": 0.1}, 0.0)


def test_a_closed_loop_sweep_still_rising_at_its_top_is_flagged():
    rising = [_point("concurrency 8", 3.0), _point("concurrency 16", 3.6)]
    flat = [_point("concurrency 8", 3.0), _point("concurrency 16", 3.1)]
    assert "still rises at concurrency 16 (3.00 -> 3.60" in still_rising(rising, closed_loop=True)
    assert still_rising(flat, closed_loop=True) is None
    assert still_rising(rising, closed_loop=False) is None


def test_settings_over_the_error_bound_are_named_but_not_for_overload_refusals():
    bad_input = measured("rate 8/s", errors=["InvalidInputError"] * 2)
    refused = measured("rate 9/s", errors=["ServerUnavailableError", "DeadlineExceededError"])
    assert failing_settings([bad_input, refused], 0.01) == ["rate 8/s: 50.0% errors (InvalidInputError)"]


def test_run_metadata_names_the_machine_and_the_code():
    code, host = code_revision(), machine()
    assert code["version"] == "0.1.0" and len(code["git_revision"]) == 40
    assert host["cpus"] >= 1 and host["python"].startswith("3.")


def test_no_load_is_sent_to_a_server_that_is_not_ready():
    from trocr_serving.launcher.server import free_port

    assert cli_main(["--url", f"127.0.0.1:{free_port()}", "--no-plot"]) == 2


def test_windows_at_a_low_rate_last_long_enough_for_their_requests():
    rule = Stability(window_s=5.0, min_window_requests=20)
    assert rule.at_rate(0.8).window_s == pytest.approx(25.0)  # 20 arrivals at 0.8/s
    assert rule.at_rate(100.0).window_s == 5.0
    assert rule.at_rate(0.01).window_s == 30.0  # at most 6x the set window
