"""Capacity planning: the highest open-loop arrival rate one replica serves within a latency SLO (searched,
each point measured until stable), and the replicas a target rate needs with headroom."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SweepPoint:
    setting: str  # "concurrency 16" or "rate 4/s"
    images_per_s: float  # achieved: images of successful requests per second
    latency_s: dict[str, float]  # p50, p90, p95, p99, max
    error_rate: float  # failed requests / requests
    offered_per_s: float | None = None  # open loop: the arrival rate
    stable: bool | None = None  # None: measured for a fixed time, not until stable


@dataclass(frozen=True)
class Slo:
    latency_s: float
    percentile: str = "p95"
    max_error_rate: float = 0.01

    def met_by(self, point: SweepPoint) -> bool:
        """Within the latency percentile and the error bound, and not unstable (a queue still growing)."""
        return (
            point.stable is not False
            and point.latency_s[self.percentile] <= self.latency_s
            and point.error_rate <= self.max_error_rate
        )

    def describe(self) -> str:
        return f"{self.percentile} <= {self.latency_s * 1e3:.0f} ms, errors <= {self.max_error_rate:.1%}"


@dataclass(frozen=True)
class RateSearch:
    """Bracket the highest rate meeting the SLO: double up from a passing rate, halve down from a failing one,
    then bisect (geometrically) until the lowest failing rate is within `resolution` of the highest passing."""

    start_per_s: float
    resolution: float = 0.1
    min_per_s: float = 0.05
    max_points: int = 12

    def __post_init__(self):
        if self.start_per_s <= 0 or not 0 < self.resolution < 1:
            raise ValueError(f"invalid rate search {self}")


def search_rate(search: RateSearch, slo: Slo, measure: Callable[[float], SweepPoint]) -> list[SweepPoint]:
    """The points measured, in order; the plan takes the best one meeting the SLO."""
    passing = failing = None
    rate = search.start_per_s
    points: list[SweepPoint] = []
    while len(points) < search.max_points:
        point = measure(rate)
        points.append(point)
        if slo.met_by(point):
            passing = rate
        else:
            failing = rate
        if passing is None:
            rate = failing / 2
            if rate < search.min_per_s:
                break
        elif failing is None:
            rate = passing * 2
        elif failing <= passing * (1 + search.resolution):
            break
        else:
            rate = math.sqrt(passing * failing)
    return points


def per_replica_images_per_s(point: SweepPoint) -> float:
    """What a replica serves at a point: in open loop the offered rate less the errors (the arrival rate is
    exact, the completions in a short window are a noisy sample of it); in closed loop, what it achieved."""
    if point.offered_per_s is None:
        return point.images_per_s
    return point.offered_per_s * (1 - point.error_rate)


@dataclass(frozen=True)
class CapacityPlan:
    slo: Slo
    best: SweepPoint | None  # the highest-throughput point meeting the SLO
    per_replica_images_per_s: float
    target_images_per_s: float
    headroom: float
    replicas: int | None  # None when no point meets the SLO
    closed_loop: bool  # planned from a closed-loop sweep: optimistic, queueing is not measured


def plan_capacity(
    points: list[SweepPoint], slo: Slo, target_images_per_s: float, headroom: float = 0.2
) -> CapacityPlan:
    """Replicas = ceil(target x (1 + headroom) / best throughput per replica meeting the SLO)."""
    if not 0 <= headroom < 10:
        raise ValueError(f"headroom {headroom} should be a fraction, e.g. 0.2 for 20%")
    best = max((p for p in points if slo.met_by(p)), key=per_replica_images_per_s, default=None)
    per_replica = per_replica_images_per_s(best) if best else 0.0
    replicas = math.ceil(target_images_per_s * (1 + headroom) / per_replica - 1e-9) if best else None
    closed_loop = any(p.offered_per_s is None for p in points)
    return CapacityPlan(slo, best, per_replica, target_images_per_s, headroom, replicas, closed_loop)


def render_plan(plan: CapacityPlan) -> str:
    lines = [
        "| SLO | best setting within it | images/s per replica | target images/s | headroom | replicas |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    slo = plan.slo.describe()
    if plan.best is None:
        lines.append(
            f"| {slo} | none: no point meets it | - | {plan.target_images_per_s:g} | {plan.headroom:.0%} | - |"
        )
    else:
        percentile = plan.slo.percentile
        lines.append(
            f"| {slo} | {plan.best.setting} ({percentile} {plan.best.latency_s[percentile] * 1e3:.0f} ms) "
            f"| {plan.per_replica_images_per_s:.2f} | {plan.target_images_per_s:g} | {plan.headroom:.0%} "
            f"| {plan.replicas} |"
        )
    if plan.closed_loop:
        lines.append(
            "\nplanned from a closed-loop sweep, which never queues more than its concurrency: production "
            "arrivals are open loop, so this plan is optimistic (the default command plans from an open-loop search)"
        )
    return "\n".join(lines)
