"""An asyncio load generator over gRPC (tritonclient.grpc.aio): closed loop (fixed concurrency) or open loop
(Poisson arrivals at a fixed rate). Only requests that complete inside the measured window (after the
warm-up, before the end) are recorded.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from trocr_client import protocol
from trocr_client.client import build_inputs
from trocr_client.errors import from_triton
from trocr_loadtest.stats import RequestRecord


@dataclass(frozen=True)
class LoadSpec:
    concurrency: int | None = None  # closed loop: this many requests in flight
    rate_per_s: float | None = None  # open loop: Poisson arrivals at this mean rate
    duration_s: float = 20.0  # measured time, after the warm-up
    warmup_s: float = 3.0
    max_requests: int | None = None  # stop after this many measured requests
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
        records: list[RequestRecord] = []
        in_flight = 0
        max_in_flight = 0
        async with grpcaio.InferenceServerClient(self.url) as client:
            # The measured window opens after the warm-up time and, in closed loop, once as many requests
            # have completed as are in flight (a cold start of slow requests is not steady state).
            window = {"from": None, "to": None}
            warmup_until = time.monotonic() + spec.warmup_s
            completions_to_warm = spec.concurrency or 0
            completed = 0

            def open_window_if_warm(now: float) -> None:
                if window["from"] is None and now >= warmup_until and completed >= completions_to_warm:
                    window["from"], window["to"] = now, now + spec.duration_s

            def done() -> bool:
                now = time.monotonic()
                open_window_if_warm(now)
                return (window["to"] is not None and now >= window["to"]) or (
                    spec.max_requests is not None and len(records) >= spec.max_requests
                )

            async def send() -> None:
                nonlocal in_flight, max_in_flight, completed
                in_flight += 1
                max_in_flight = max(max_in_flight, in_flight)
                try:
                    record = await self._one(client, spec, rng.choice(self.images))
                finally:
                    in_flight -= 1
                completed += 1
                # Completions inside the measured window count, whenever they started: counting only
                # requests that start and end inside it would under-count by latency / window.
                finished = record.start_s + record.latency_s
                if window["from"] is not None and window["from"] <= finished and not done():
                    records.append(record)
                    if self.progress:
                        self.progress(len(records))
                open_window_if_warm(time.monotonic())

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
        measured_s = min(time.monotonic(), window["to"] or 0.0) - (window["from"] or 0.0)
        return LoadResult(spec, records, max(measured_s, 1e-9), max_in_flight)


def run_load(url: str, images: Sequence[bytes], spec: LoadSpec, progress=None) -> LoadResult:
    return asyncio.run(LoadGenerator(url, images, progress).run(spec))
