"""Statistics of a load-test run: percentiles, goodput under a latency SLO, throughput."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method); q in 0..100."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class RequestRecord:
    start_s: float  # monotonic
    latency_s: float
    images: int
    tokens: int
    error: str | None = None  # error type name, None on success
    message: str | None = None  # the error's message


@dataclass
class Summary:
    requests: int
    succeeded: int
    duration_s: float
    images_per_s: float
    tokens_per_s: float
    latency_s: dict[str, float] = field(default_factory=dict)  # p50, p90, p95, p99, max, mean
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)  # one message per error type
    goodput_images_per_s: float | None = None  # images/s of requests that met the SLO
    slo_s: float | None = None


def summarize(records: list[RequestRecord], duration_s: float, slo_s: float | None = None) -> Summary:
    ok = [r for r in records if r.error is None]
    latencies = [r.latency_s for r in ok]
    summary = Summary(
        requests=len(records),
        succeeded=len(ok),
        duration_s=duration_s,
        images_per_s=sum(r.images for r in ok) / duration_s if duration_s > 0 else math.nan,
        tokens_per_s=sum(r.tokens for r in ok) / duration_s if duration_s > 0 else math.nan,
        latency_s={
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": max(latencies) if latencies else math.nan,
            "mean": sum(latencies) / len(latencies) if latencies else math.nan,
        },
        errors=dict(Counter(r.error for r in records if r.error is not None)),
        error_examples={r.error: r.message or "" for r in reversed(records) if r.error is not None},
        slo_s=slo_s,
    )
    if slo_s is not None and duration_s > 0:
        summary.goodput_images_per_s = sum(r.images for r in ok if r.latency_s <= slo_s) / duration_s
    return summary
