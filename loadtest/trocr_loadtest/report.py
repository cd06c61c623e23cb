"""Load-test reports: a table on the terminal, JSON, CSV, and a PNG of the throughput-latency curve."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path

from trocr_loadtest.stats import Summary

PERCENTILES = ("p50", "p90", "p95", "p99", "max")


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1e3:.0f}"


def render_sweep(rows: list[tuple[str, Summary, dict | None]]) -> str:
    header = (
        "| setting | requests | ok | images/s | tokens/s | goodput images/s | "
        + " | ".join(f"{p} ms" for p in PERCENTILES)
        + " | errors | decoder batch | encoder batch |"
    )
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for setting, s, server in rows:
        goodput = "-" if s.goodput_images_per_s is None else f"{s.goodput_images_per_s:.2f}"
        errors = ", ".join(f"{k} {v}" for k, v in s.errors.items()) or "0"
        decoder = "-" if not server else f"{server['decoder_mean_batch']:.1f}"
        encoder = "-" if not server else f"{server['encoder_mean_batch']:.1f}"
        lines.append(
            f"| {setting} | {s.requests} | {s.succeeded} | {s.images_per_s:.2f} | {s.tokens_per_s:.1f} | {goodput} | "
            + " | ".join(_ms(s.latency_s[p]) for p in PERCENTILES)
            + f" | {errors} | {decoder} | {encoder} |"
        )
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    path.write_text(
        json.dumps(payload, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    )


def write_csv(path: Path, rows: list[tuple[str, Summary, dict | None]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        server_keys = sorted(next((srv for _, _, srv in rows if srv), {}) or {})
        writer.writerow(
            ["setting", "requests", "succeeded", "images_per_s", "tokens_per_s", "goodput_images_per_s"]
            + [f"latency_{p}_s" for p in PERCENTILES]
            + ["errors"]
            + [f"server_{k}" for k in server_keys]
        )
        for setting, s, server in rows:
            writer.writerow(
                [
                    setting,
                    s.requests,
                    s.succeeded,
                    f"{s.images_per_s:.4f}",
                    f"{s.tokens_per_s:.4f}",
                    "" if s.goodput_images_per_s is None else f"{s.goodput_images_per_s:.4f}",
                ]
                + [f"{s.latency_s[p]:.6f}" for p in PERCENTILES]
                + [json.dumps(s.errors)]
                + [(server or {}).get(k, "") for k in server_keys]
            )


def plot_curve(path: Path, rows: list[tuple[str, Summary, dict | None]], slo_s: float | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=120)
    throughput = [s.images_per_s for _, s, _ in rows]
    for percentile, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
        axis.plot(throughput, [s.latency_s[percentile] * 1e3 for _, s, _ in rows], style, label=percentile)
    for (setting, s, _), x in zip(rows, throughput):
        axis.annotate(
            setting.split(" ", 1)[-1],
            (x, s.latency_s["p95"] * 1e3),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    if slo_s is not None:
        axis.axhline(slo_s * 1e3, color="red", linewidth=1, label=f"SLO {slo_s * 1e3:.0f} ms")
    axis.set_xlabel("throughput (images/s)")
    axis.set_ylabel("latency (ms)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
