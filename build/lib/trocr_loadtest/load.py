"""An asyncio load generator over gRPC (tritonclient.grpc.aio): closed loop (fixed concurrency) or open loop
(Poisson arrivals at a fixed rate). After the warm-up, completions are measured either for a fixed duration
(or request count) or, as perf_analyzer does, in consecutive windows until the last few agree (`Stability`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from trocr_client import protocol
from trocr_client.client import build_inputs
from trocr_client.errors import from_triton
from trocr_loadtest.stats import RequestRecord

MAX_WINDOW_STRETCH = 6  # a 5 s window grows to 30 s at most, however low the rate


@dataclass(frozen=True)
class Stability:
    """perf_analyzer's rule for a steady state: measure windows of `window_s` until the last `windows` agree
    (throughput and mean latency each within `tolerance` of their mean), at most `max_windows`; a setting
    that never settles (a queue that keeps growing) is reported as unstable, at once when its mean latency
    rises past `latency_bound_s` (it will not come back under an SLO)."""

    window_s: float = 5.0  # perf_analyzer --measurement-interval
    tolerance: float = 0.1  # --stability-percentage
    windows: int = 3
    max_windows: int = 10  # --max-trials
    latency_bound_s: float | None = None
    # A window holds at least this many arrivals at an open-loop rate (perf_analyzer's count windows): a p95
    # from the eight requests of three 5 s windows at 0.8/s is noise, not a measurement.
    min_window_requests: int = 20

    def __post_init__(self):
        if self.window_s <= 0 or not 0 < self.tolerance < 1 or not 1 <= self.windows <= self.max_windows:
            raise ValueError(f"invalid stability rule {self}")

    def at_rate(self, rate_per_s: float) -> Stability:
        """The rule for an open loop at `rate_per_s`: windows long enough for `min_window_requests` arrivals, at
        most MAX_WINDOW_STRETCH times the set window."""
        window_s = min(max(self.window_s, self.min_window_requests / rate_per_s), MAX_WINDOW_STRETCH * self.window_s)
        return dataclasses.replace(self, window_s=window_s)


@dataclass(frozen=True)
class LoadSpec:
    concurrency: int | None = None  # closed loop: this many requests in flight
    rate_per_s: float | None = None  # open loop: Poisson arrivals at this mean rate
    duration_s: float = 20.0  # measured time, after the warm-up (when no stability rule is given)
    warmup_s: float = 3.0
    max_requests: int | None = None  # stop after this many measured requests
    stability: Stability | None = None  # measure until stable instead of for duration_s
    max_new_tokens: int | None = None
    num_beams: int | None = None
    ignore_eos: bool | None = None
    timeout_s: float = 300.0
    seed: int = 0

    def __post_init__(self):
        if (self.concurrency is None) == (self.rate_per_s is None):
            raise ValueError("give exactly one of concurrency (closed loop) or rate_per_s (open loop)")


@dataclass
class LoadResult:
    spec: LoadSpec
    records: list[RequestRecord]
    duration_s: float
    max_in_flight: int
    stable: bool | None = None  # None without a stability rule


@dataclass(frozen=True)
class WindowFigures:
    completions: int  # successes and errors: does the server keep up with the offered load
    mean_latency_s: float  # of the successes (of all completions when none succeeded)
    latency_sem_s: float  # the standard error of that mean


def window_figures(records: list[RequestRecord], start_s: float, window_s: float, count: int) -> list[WindowFigures]:
    """Figures of `count` consecutive windows from `start_s`, each record in the window its completion falls in."""
    latencies: list[list[float]] = [[] for _ in range(count)]
    failed: list[list[float]] = [[] for _ in range(count)]
    for record in records:
        index = math.floor((record.start_s + record.latency_s - start_s) / window_s)
        if 0 <= index < count:
            (failed if record.error else latencies)[index].append(record.latency_s)
    figures = []
    for ok, bad in zip(latencies, failed):
        values = ok or bad
        mean = statistics.fmean(values) if values else math.inf
        sem = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.inf
        figures.append(WindowFigures(len(ok) + len(bad), mean, sem))
    return figures


NOISE_SIGMAS = 3.0  # differences within this many standard errors are sampling noise, not a trend


def is_stable(figures: list[WindowFigures], tolerance: float, arrivals: float | None = None) -> bool:
    """perf_analyzer's rule, made robust to the noise of open-loop arrivals: every window's completions within
    `tolerance` of their mean (in open loop: of the `arrivals` expected per window, so a server that falls
    behind is not steady) or within Poisson noise, and the mean latency not rising window after window by
    more than `tolerance` and the noise (a growing queue). Latencies that go up and down are bursts, which
    last seconds under Poisson arrivals: they move a window's mean far beyond its standard error."""
    if not figures or any(math.isinf(f.mean_latency_s) for f in figures):
        return False
    counts = [f.completions for f in figures]
    count_mean = statistics.fmean(counts) if arrivals is None else arrivals
    count_noise = NOISE_SIGMAS * math.sqrt(count_mean)
    if any(abs(c - count_mean) > max(tolerance * count_mean, count_noise) for c in counts):
        return False
    latencies = [f.mean_latency_s for f in figures]
    rising = all(later > earlier for earlier, later in zip(latencies, latencies[1:]))
    first, last = figures[0], figures[-1]
    noise = NOISE_SIGMAS * math.hypot(first.latency_sem_s, last.latency_sem_s)
    return not (rising and last.mean_latency_s - first.mean_latency_s > tolerance * first.mean_latency_s + noise)


def past_bound(figures: list[WindowFigures], rule: Stability) -> bool:
    """Mean latency rising (last window over the first by more than the tolerance) and already past the bound."""
    first, last = figures[0].mean_latency_s, figures[-1].mean_latency_s
    return rule.latency_bound_s is not None and last > rule.latency_bound_s and last > (1 + rule.tolerance) * first


class Measurement:
    """Which completions count, and when a setting is done: a fixed window, or windows until stable."""

    def __init__(self, spec: LoadSpec):
        self.spec = spec
        self.start_s: float | None = None
        self.end_s: float | None = None
        self.records: list[RequestRecord] = []
        self.stable: bool | None = None
        self.windows = 0

    def open(self, now: float) -> None:
        if self.start_s is None:
            self.start_s = now
            if self.spec.stability is None:
                self.end_s = now + self.spec.duration_s

    def add(self, record: RequestRecord) -> bool:
        """Keep a completion inside the measurement (whenever it started: counting only requests that start
        and end inside it would under-count by latency / window)."""
        finished = record.start_s + record.latency_s
        if self.start_s is None or finished < self.start_s or (self.end_s is not None and finished >= self.end_s):
            return False
        self.records.append(record)
        return True

    def done(self, now: float) -> bool:
        if self.end_s is not None:
            return now >= self.end_s or (
                self.spec.max_requests is not None and len(self.records) >= self.spec.max_requests
            )
        rule = self.spec.stability
        if self.start_s is None or rule is None:
            return False
        closed = min(math.floor((now - self.start_s) / rule.window_s), rule.max_windows)
        if closed < rule.windows or closed == self.windows:
            return False
        self.windows = closed
        first = self.start_s + (closed - rule.windows) * rule.window_s
        figures = window_figures(self.records, first, rule.window_s, rule.windows)
        arrivals = self.spec.rate_per_s * rule.window_s if self.spec.rate_per_s else None
        self.stable = is_stable(figures, rule.tolerance, arrivals)
        if self.stable or closed >= rule.max_windows or past_bound(figures, rule):
            # The result is the last `windows` windows: the steady state, or the latest state of an unstable one.
            self.start_s, self.end_s = first, first + rule.windows * rule.window_s
            self.records = [r for r in self.records if first <= r.start_s + r.latency_s < self.end_s]
            return True
        return False

    def duration_s(self, now: float) -> float:
        return max(min(now, self.end_s or now) - (self.start_s or now), 1e-9)


class LoadGenerator:
    def __init__(self, url: str, images: Sequence[bytes], progress: Callable[[int], None] | None = None):
        self.url = url
        self.images = list(images)
        self.progress = progress

    async def _one(self, client, spec: LoadSpec, image: bytes) -> RequestRecord:
        started = time.monotonic()
        inputs = build_inputs([image], spec.max_new_tokens, spec.num_beams, spec.ignore_eos)
        try:
            response = await client.infer(
                protocol.MODEL_NAME, inputs, client_timeout=spec.timeout_s, timeout=int(spec.timeout_s * 1e6)
            )
        except InferenceServerException as exc:
            error = from_triton(exc)
            return RequestRecord(started, time.monotonic() - started, 1, 0, type(error).__name__, str(error))
        except Exception as exc:  # transport failures count as errors, not crashes
            return RequestRecord(started, time.monotonic() - started, 1, 0, type(exc).__name__, str(exc))
        token_ids = response.as_numpy(protocol.OUTPUT_TOKEN_IDS)
        tokens = int((token_ids != protocol.TOKEN_IDS_PADDING).sum())
        return RequestRecord(started, time.monotonic() - started, 1, tokens)

    async def run(self, spec: LoadSpec) -> LoadResult:
        rng = random.Random(spec.seed)
        measurement = Measurement(spec)
        in_flight = 0
        max_in_flight = 0
        finished = False
        async with grpcaio.InferenceServerClient(self.url) as client:
            # The measurement opens after the warm-up time and, in closed loop, once as many requests have
            # completed as are in flight (a cold start of slow requests is not steady state).
            warmup_until = time.monotonic() + spec.warmup_s
            completions_to_warm = spec.concurrency or 0
            completed = 0

            def done() -> bool:
                nonlocal finished
                now = time.monotonic()
                if now >= warmup_until and completed >= completions_to_warm:
                    measurement.open(now)
                finished = finished or measurement.done(now)
                return finished

            async def send() -> None:
                nonlocal in_flight, max_in_flight, completed
                in_flight += 1
                max_in_flight = max(max_in_flight, in_flight)
                try:
                    record = await self._one(client, spec, rng.choice(self.images))
                finally:
                    in_flight -= 1
                completed += 1
                if not done() and measurement.add(record) and self.progress:
                    self.progress(len(measurement.records))

            if spec.concurrency is not None:

                async def worker() -> None:
                    while not done():
                        await send()

                await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
            else:
                tasks = set()
                next_at = time.monotonic()
                while not done():
                    next_at += rng.expovariate(spec.rate_per_s)
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    task = asyncio.ensure_future(send())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.gather(*tasks)
        now = time.monotonic()
        return LoadResult(
            spec,
            measurement.records,
            measurement.duration_s(now),
            max_in_flight,
            measurement.stable,
        )


def run_load(url: str, images: Sequence[bytes], spec: LoadSpec, progress=None) -> LoadResult:
    return asyncio.run(LoadGenerator(url, images, progress).run(spec))
