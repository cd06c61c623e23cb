"""Capacity planning from a load sweep: the most throughput one replica gives within a latency SLO, and the
replicas a target rate needs with headroom."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SweepPoint:
    setting: str  # "concurrency 16" or "rate 4.0/s"
    images_per_s: float
    latency_s: dict[str, float]  # p50, p90, p95, p99, max
    error_rate: float  # failed requests / requests


@dataclass(frozen=True)
class CapacityPlan:
    slo_s: float
    percentile: str
    best: SweepPoint | None  # the highest-throughput point meeting the SLO
    per_replica_images_per_s: float
    target_images_per_s: float
    headroom: float
    replicas: int | None  # None when no point meets the SLO


def plan_capacity(
    points: list[SweepPoint],
    slo_s: float,
    target_images_per_s: float,
    headroom: float = 0.2,
    percentile: str = "p95",
    max_error_rate: float = 0.0,
) -> CapacityPlan:
    """Replicas = ceil(target x (1 + headroom) / best throughput per replica meeting the SLO)."""
    if not 0 <= headroom < 10:
        raise ValueError(f"headroom {headroom} should be a fraction, e.g. 0.2 for 20%")
    eligible = [p for p in points if p.latency_s[percentile] <= slo_s and p.error_rate <= max_error_rate]
    best = max(eligible, key=lambda p: p.images_per_s, default=None)
    per_replica = best.images_per_s if best else 0.0
    replicas = math.ceil(target_images_per_s * (1 + headroom) / per_replica - 1e-9) if best else None
    return CapacityPlan(slo_s, percentile, best, per_replica, target_images_per_s, headroom, replicas)


def render_plan(plan: CapacityPlan) -> str:
    lines = [
        "| SLO | best setting within it | images/s per replica | target images/s | headroom | replicas |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    slo = f"{plan.percentile} <= {plan.slo_s * 1e3:.0f} ms"
    if plan.best is None:
        lines.append(
            f"| {slo} | none: no sweep point meets it | - | {plan.target_images_per_s:g} | {plan.headroom:.0%} | - |"
        )
    else:
        lines.append(
            f"| {slo} | {plan.best.setting} ({plan.percentile} {plan.best.latency_s[plan.percentile] * 1e3:.0f} ms) "
            f"| {plan.per_replica_images_per_s:.2f} | {plan.target_images_per_s:g} | {plan.headroom:.0%} "
            f"| {plan.replicas} |"
        )
    return "\n".join(lines)
