"""The asyncio step loop around the row scheduler and a decoder runner: concurrency, cancellation and
deadlines free rows."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from trocr_serving.decode_loop import DecodeLoop, Ticket
from trocr_serving.decoder_signature import StepCandidates
from trocr_serving.refusals import DeadlineExceededError, QueueFullError, RequestCancelledError
from trocr_serving.row_scheduler import RowScheduler
from trocr_serving.search import SearchParams

EOS = 2


class SlowRunner:
    """A decoder runner that never emits end-of-sequence (token 4 always wins); each step takes step_s."""

    def __init__(self, step_s: float):
        self.step_s = step_s

    def execute(self, plan):
        time.sleep(self.step_s)
        ranking = np.array([4, 0, 1, 2, 3])[: plan.top_k]  # token 4 first, then the others by id
        log_probs = np.array([-0.1, -5, -5, -5, -5], dtype=np.float32)[: plan.top_k]
        return StepCandidates(np.tile(log_probs, (plan.rows, 1)), np.tile(ranking, (plan.rows, 1)))

    def commit(self, update):
        pass

    def move(self, moves):
        pass


def make_loop(step_s=0.002, max_rows=4, max_queued=8) -> DecodeLoop:
    scheduler = RowScheduler(max_rows, max_cache_len=200, max_queued=max_queued, start_token=EOS)
    return DecodeLoop(scheduler, SlowRunner(step_s))


def params(tokens: int) -> SearchParams:
    return SearchParams(max_new_tokens=tokens, eos_token_id=EOS, decoder_start_token_id=EOS)


def cross(images: int) -> np.ndarray:
    return np.zeros((images, 1, 2, 1, 3, 2), dtype=np.float32)


async def generate(loop: DecodeLoop, tokens: list[int], ticket: Ticket | None = None):
    loop.reserve(len(tokens))
    return await loop.generate(cross(len(tokens)), [params(t) for t in tokens], ticket or Ticket(), len(tokens))


def test_requests_share_steps_and_finish_independently():
    async def scenario():
        loop = make_loop()
        short, long = await asyncio.gather(generate(loop, [3]), generate(loop, [40, 10]))
        return loop, short, long

    loop, short, long = asyncio.run(scenario())
    assert [len(r.token_ids) for r in short + long] == [3, 40, 10]
    assert loop.scheduler.active_rows == 0 and loop.pending_rows == 0


def test_cancelled_request_frees_its_rows():
    async def scenario():
        loop = make_loop(step_s=0.005)
        cancelled = {"flag": False}
        ticket = Ticket(is_cancelled=lambda: cancelled["flag"])
        task = asyncio.ensure_future(generate(loop, [150], ticket))
        other = asyncio.ensure_future(generate(loop, [30]))
        await asyncio.sleep(0.05)
        cancelled["flag"] = True
        with pytest.raises(RequestCancelledError):
            await task
        await other
        return loop, other.result()

    loop, other = asyncio.run(scenario())
    assert len(other[0].token_ids) == 30
    assert loop.scheduler.active_rows == 0


def test_deadline_frees_rows():
    async def scenario():
        loop = make_loop(step_s=0.005)
        ticket = Ticket(deadline=time.monotonic() + 0.05)
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await generate(loop, [150], ticket)
        return loop, time.monotonic() - started

    loop, elapsed_s = asyncio.run(scenario())
    assert elapsed_s < 0.5  # 150 steps would take 0.75 s
    assert loop.scheduler.active_rows == 0


def test_queue_bound_counts_requests_still_encoding():
    loop = make_loop(max_rows=1, max_queued=2)
    loop.reserve(2)
    loop.reserve(1)  # the free row takes one of the waiting rows
    with pytest.raises(QueueFullError, match="server busy: 3 sequences already wait"):
        loop.reserve(1)
    loop.release(3)
    loop.reserve(1)


def test_encoder_feeder_batches_what_accumulated_during_a_call():
    from trocr_serving.encode_feeder import EncodeFeeder

    batch_sizes = []

    async def encode_batch(pixel_values):
        batch_sizes.append(len(pixel_values))
        await asyncio.sleep(0.02)
        return pixel_values * 10

    async def scenario():
        feeder = EncodeFeeder(encode_batch, max_batch=4)
        first = asyncio.ensure_future(feeder.encode(np.full((1, 2), 1.0)))
        await asyncio.sleep(0)  # the first call starts alone: no batching delay at low load
        rest = [asyncio.ensure_future(feeder.encode(np.full((n, 2), float(n)))) for n in (2, 1, 3)]
        results = await asyncio.gather(first, *rest)
        return feeder, results

    _, results = asyncio.run(scenario())
    assert batch_sizes == [1, 3, 3]  # 2+1 waited together; 3 more would exceed max_batch 4
    assert [r.tolist() for r in results] == [[[10.0, 10.0]], [[20.0, 20.0]] * 2, [[10.0, 10.0]], [[30.0, 30.0]] * 3]


def test_encoder_feeder_failure_reaches_every_waiting_request():
    from trocr_serving.encode_feeder import EncodeFeeder

    async def encode_batch(pixel_values):
        raise RuntimeError("encoder down")

    async def scenario():
        feeder = EncodeFeeder(encode_batch, max_batch=4)
        return await asyncio.gather(*(feeder.encode(np.zeros((1, 2))) for _ in range(3)), return_exceptions=True)

    assert [str(e) for e in asyncio.run(scenario())] == ["encoder down"] * 3
