"""Load-test reports: a table on the terminal, JSON, a CSV per setting in perf_analyzer's column names and
units, a CSV of every measured request, and a PNG of offered versus achieved rate and latency."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path

from trocr_loadtest.sweep import Measured

PERCENTILES = ("p50", "p90", "p95", "p99", "max")
STABILITY = {True: "yes", False: "NO", None: "-"}


# Results go under the folder the command runs in (a wheel install has no source tree to write into).
RESULTS_DIR = Path("loadtest-results")


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1e3:.0f}"


def _us(value: float) -> str:
    return "" if math.isnan(value) else f"{value * 1e6:.0f}"


def render_sweep(measured: list[Measured]) -> str:
    header = (
        "| phase | setting | requests | ok | images/s | tokens/s | goodput images/s | "
        + " | ".join(f"{p} ms" for p in PERCENTILES)
        + " | errors | stable | decoder batch | encoder batch |"
    )
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for m in measured:
        s, server = m.summary, m.server
        goodput = "-" if s.goodput_images_per_s is None else f"{s.goodput_images_per_s:.2f}"
        errors = ", ".join(f"{k} {v}" for k, v in s.errors.items()) or "0"
        decoder = "-" if not server else f"{server['decoder_mean_batch']:.1f}"
        encoder = "-" if not server else f"{server['encoder_mean_batch']:.1f}"
        lines.append(
            f"| {m.phase} | {m.setting} | {s.requests} | {s.succeeded} | {s.images_per_s:.2f} | {s.tokens_per_s:.1f} "
            f"| {goodput} | "
            + " | ".join(_ms(s.latency_s[p]) for p in PERCENTILES)
            + f" | {errors} | {STABILITY[m.stable]} | {decoder} | {encoder} |"
        )
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    path.write_text(
        json.dumps(payload, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    )


# perf_analyzer's CSV names and units (latencies and server times in microseconds), then this project's own.
CSV_COLUMNS = (
    "Concurrency", "Request Rate", "Inferences/Second", "Server Queue", "Server Compute Infer",
    "p50 latency", "p90 latency", "p95 latency", "p99 latency", "Avg latency",
    "Max latency", "Images/Second", "Tokens/Second", "Goodput Images/Second", "Requests", "Succeeded", "Errors",
    "Stable", "Phase", "Setting",
)  # fmt: skip


def write_csv(path: Path, measured: list[Measured]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for m in measured:
            s, server = m.summary, m.server or {}
            goodput = s.goodput_images_per_s
            writer.writerow(
                [
                    m.spec.concurrency or "",
                    "" if m.spec.rate_per_s is None else f"{m.spec.rate_per_s:.4f}",
                    f"{s.succeeded / s.duration_s:.4f}",
                    _us(server.get("trocr_queue_mean_ms", math.nan) / 1e3),
                    _us(server.get("trocr_compute_mean_ms", math.nan) / 1e3),
                    *(_us(s.latency_s[p]) for p in ("p50", "p90", "p95", "p99", "mean", "max")),
                    f"{s.images_per_s:.4f}",
                    f"{s.tokens_per_s:.4f}",
                    "" if goodput is None else f"{goodput:.4f}",
                    s.requests,
                    s.succeeded,
                    json.dumps(s.errors),
                    STABILITY[m.stable],
                    m.phase,
                    m.setting,
                ]
            )


def write_requests_csv(path: Path, measured: list[Measured]) -> None:
    """Every measured request: when it was sent (seconds from the run's first), its latency, its outcome."""
    origin = min((r.start_s for m in measured for r in m.records), default=0.0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phase", "setting", "send_time_s", "latency_us", "images", "tokens", "error"])
        for m in measured:
            for r in sorted(m.records, key=lambda r: r.start_s):
                writer.writerow(
                    [m.phase, m.setting, f"{r.start_s - origin:.6f}", f"{r.latency_s * 1e6:.0f}", r.images, r.tokens]
                    + [r.error or ""]
                )


def latency_axis_top_s(latencies_s: list[float], slo_s: float) -> float:
    """Room for every point under the SLO and a margin above it; points beyond are drawn at the edge, so one
    overloaded point (seconds, minutes) does not flatten the ones that matter."""
    under = [v for v in latencies_s if v <= slo_s]
    return max([1.5 * slo_s] + [1.15 * v for v in under])


def _latency_panel(axis, xs: list[float], measured: list[Measured], slo_s: float) -> None:
    top_ms = latency_axis_top_s([m.summary.latency_s[p] for m in measured for p in ("p50", "p95", "p99")], slo_s) * 1e3
    for percentile, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
        values = [m.summary.latency_s[percentile] * 1e3 for m in measured]
        line = axis.plot(xs, [min(v, top_ms) for v in values], style, label=percentile)[0]
        for x, v in zip(xs, values):
            if v > top_ms:  # off the axis: an arrow at the edge with its value
                axis.annotate(f"{v / 1e3:.1f} s", (x, top_ms), xytext=(0, -12), textcoords="offset points",
                              fontsize=7, ha="center", color=line.get_color())  # fmt: skip
    for x, m in zip(xs, measured):
        if m.stable is False:
            axis.annotate("unstable", (x, min(m.summary.latency_s["p95"] * 1e3, top_ms)), xytext=(4, 4),
                          textcoords="offset points", fontsize=7, color="red")  # fmt: skip
    axis.axhline(slo_s * 1e3, color="red", linewidth=1, label=f"SLO {slo_s * 1e3:.0f} ms")
    axis.set_ylim(0, top_ms * 1.05)
    axis.set_ylabel("latency (ms)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def plot(path: Path, measured: list[Measured], slo_s: float, title: str, planned_per_s: float | None = None) -> None:
    """Open-loop points: achieved against offered rate, and latency against offered rate (with the planned
    rate). A closed-loop sweep (no offered rate): latency against achieved throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    open_loop = sorted((m for m in measured if m.spec.rate_per_s is not None), key=lambda m: m.spec.rate_per_s)
    if open_loop:
        figure, (rates, latency) = plt.subplots(2, 1, figsize=(7, 7), dpi=120, sharex=True)
        offered = [m.spec.rate_per_s for m in open_loop]
        rates.plot(offered, offered, ":", color="grey", label="achieved = offered")
        rates.plot(offered, [m.summary.images_per_s for m in open_loop], "o-", label="achieved (successes)")
        rates.plot(
            offered, [m.summary.goodput_images_per_s or 0.0 for m in open_loop], "s--", label="goodput (SLO met)"
        )
        rates.set_ylabel("images/s")
        rates.set_title(title)
        rates.grid(alpha=0.3)
        rates.legend(fontsize=8)
        _latency_panel(latency, offered, open_loop, slo_s)
        latency.set_xlabel("offered rate (requests/s, Poisson arrivals)")
        if planned_per_s is not None:
            for axis in (rates, latency):
                axis.axvline(planned_per_s, color="green", linewidth=1, label="planned rate")
            rates.legend(fontsize=8)
    else:
        figure, latency = plt.subplots(figsize=(7, 4.5), dpi=120)
        _latency_panel(latency, [m.summary.images_per_s for m in measured], measured, slo_s)
        for m in measured:
            latency.annotate(m.setting.split(" ", 1)[-1], (m.summary.images_per_s, 0), xytext=(0, 4),
                             textcoords="offset points", fontsize=7, ha="center")  # fmt: skip
        latency.set_xlabel("achieved throughput (images/s), closed loop")
        latency.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
