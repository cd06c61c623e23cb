"""One measured setting of a load test: the load, the client's statistics, the server's figures from
/metrics between the setting's start and end, and the load generator's own cost."""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from trocr_client.errors import DeadlineExceededError, ServerUnavailableError
from trocr_loadtest.capacity import SweepPoint
from trocr_loadtest.load import LoadSpec, run_load
from trocr_loadtest.server_metrics import ServerFigures, scrape
from trocr_loadtest.stats import RequestRecord, Summary, summarize

LOGGER = logging.getLogger(__name__)

# Errors that say "too much load, retry later": they count against the SLO, not as a broken run.
OVERLOAD_ERRORS = frozenset({ServerUnavailableError.__name__, DeadlineExceededError.__name__})


@dataclass
class Measured:
    setting: str
    phase: str  # "sweep"; or in a rate search "calibrate", "search", "plan" (the planned rate), "confirm" (1.3x)
    spec: LoadSpec
    summary: Summary
    server: dict | None  # ServerFigures between the setting's scrapes, None without /metrics
    stable: bool | None
    records: list[RequestRecord]
    max_in_flight: int
    cpu_percent_of_one_core: float  # the load generator's

    def point(self) -> SweepPoint:
        s = self.summary
        return SweepPoint(
            self.setting,
            s.images_per_s,
            s.latency_s,
            1 - s.succeeded / s.requests if s.requests else 1.0,
            self.spec.rate_per_s,
            self.stable,
        )

    def other_error_rate(self) -> float:
        """Errors that are not overload refusals (bad input, server faults, transport) per request."""
        s = self.summary
        other = sum(count for kind, count in s.errors.items() if kind not in OVERLOAD_ERRORS)
        return other / s.requests if s.requests else 1.0


class Progress:
    """One status line on stderr, redrawn at most twice a second."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.5:
            self.last = now
            elapsed = now - self.started
            sys.stderr.write(f"\r  {self.label}: {done} requests measured, {elapsed:.0f} s elapsed   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


class Runner:
    def __init__(self, url: str, metrics_url: str, images: Sequence[bytes], slo_s: float):
        self.url, self.metrics_url, self.images, self.slo_s = url, metrics_url, images, slo_s
        self.measured: list[Measured] = []

    def _scrape(self):
        try:
            return scrape(self.metrics_url)
        except OSError as exc:
            LOGGER.warning("no server figures: cannot read %s (%s)", self.metrics_url, exc)
            return None

    def measure(self, setting: str, spec: LoadSpec, phase: str = "sweep") -> Measured:
        before = self._scrape()
        cpu_before, wall_before = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        progress = Progress(setting, sys.stderr.isatty())
        result = run_load(self.url, self.images, spec, progress)
        progress.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = usage.ru_utime + usage.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
        after = self._scrape()
        summary = summarize(result.records, result.duration_s, slo_s=self.slo_s)
        measured = Measured(
            setting,
            phase,
            spec,
            summary,
            ServerFigures.between(before, after).__dict__ if before and after else None,
            result.stable,
            result.records,
            result.max_in_flight,
            100 * cpu_s / (time.monotonic() - wall_before),
        )
        self.measured.append(measured)
        stability = {True: ", stable", False: ", UNSTABLE", None: ""}[result.stable]
        LOGGER.info(
            "%s: %.2f images/s, p95 %.0f ms, %d/%d ok%s",
            setting,
            summary.images_per_s,
            summary.latency_s["p95"] * 1e3,
            summary.succeeded,
            summary.requests,
            stability,
        )
        for error, message in summary.error_examples.items():
            LOGGER.warning("%s: %d x %s, e.g. %s", setting, summary.errors[error], error, message)
        return measured
