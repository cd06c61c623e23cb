"""The asyncio step loop around the row scheduler and a model runner: concurrency, cancellation and
deadlines free rows, a failed encoder call fails its own images only."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from trocr_serving.engine.decode_loop import DecodeLoop, Ticket
from trocr_serving.engine.decoder_signature import StepCandidates
from trocr_serving.engine.encoder_runner import EncoderError
from trocr_serving.engine.row_scheduler import RowScheduler
from trocr_serving.engine.search import SearchParams
from trocr_serving.refusals import DeadlineExceededError, QueueFullError, RequestCancelledError

EOS = 2


class SlowRunner:
    """A model runner that never emits end-of-sequence (token 4 always wins); each step takes step_s; an encoder
    call with an image of value 255 fails."""

    def __init__(self, step_s: float):
        self.step_s = step_s
        self.steps = 0
        self.encoder_batches: list[int] = []

    def execute(self, plan):
        if plan.loads:
            if any(load.pixels.max() == 255 for load in plan.loads):
                raise EncoderError("encoder failed: out of memory")
            self.encoder_batches.append(len(plan.loads))
        time.sleep(self.step_s)
        self.steps += 1
        ranking = np.array([4, 0, 1, 2, 3])[: plan.top_k]  # token 4 first, then the others by id
        log_probs = np.array([-0.1, -5, -5, -5, -5], dtype=np.float32)[: plan.top_k]
        return StepCandidates(np.tile(log_probs, (plan.rows, 1)), np.tile(ranking, (plan.rows, 1)))

    def commit(self, update):
        pass

    def move(self, moves):
        pass


def make_loop(step_s=0.002, max_rows=4, max_queued=8, max_encoder_batch=None) -> DecodeLoop:
    scheduler = RowScheduler(
        max_rows, max_cache_len=200, max_queued=max_queued, start_token=EOS, max_encoder_batch=max_encoder_batch
    )
    return DecodeLoop(scheduler, SlowRunner(step_s))


def params(tokens: int) -> SearchParams:
    return SearchParams(max_new_tokens=tokens, eos_token_id=EOS, decoder_start_token_id=EOS)


def pixels(images: int, value: int = 0) -> np.ndarray:
    return np.full((images, 3, 2, 2), value, dtype=np.uint8)


async def generate(loop: DecodeLoop, tokens: list[int], ticket: Ticket | None = None, value: int = 0):
    return await loop.generate(pixels(len(tokens), value), [params(t) for t in tokens], ticket or Ticket())


def test_requests_share_steps_and_finish_independently():
    async def scenario():
        loop = make_loop()
        short, long = await asyncio.gather(generate(loop, [3]), generate(loop, [40, 10]))
        return loop, short, long

    loop, short, long = asyncio.run(scenario())
    assert [len(r.token_ids) for r in short + long] == [3, 40, 10]
    assert loop.scheduler.active_rows == 0 and not loop.scheduler.waiting


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
        with pytest.raises(DeadlineExceededError):
            await generate(loop, [150], ticket)
        return loop

    loop = asyncio.run(scenario())
    assert loop.runner.steps < 150  # the work was ended, not run to its end
    assert loop.scheduler.active_rows == 0


def test_images_wait_as_pixels_and_join_in_encoder_batches_as_rows_free():
    async def scenario():
        loop = make_loop(max_rows=4, max_encoder_batch=2)
        results = await asyncio.gather(*(generate(loop, [5]) for _ in range(7)))
        return loop, results

    loop, results = asyncio.run(scenario())
    assert [len(r[0].token_ids) for r in results] == [5] * 7
    assert loop.runner.encoder_batches == [2, 2, 2, 1]  # one encoder batch per step: 2, 2 (rows full), then 2, 1


def test_a_failed_encoder_call_fails_its_images_and_the_running_rows_go_on():
    async def scenario():
        loop = make_loop(step_s=0.005, max_rows=4)
        running = asyncio.ensure_future(generate(loop, [30]))
        await asyncio.sleep(0.02)
        failed = await asyncio.gather(generate(loop, [5], value=255), return_exceptions=True)
        return loop, failed, await running

    loop, (failed,), running = asyncio.run(scenario())
    assert isinstance(failed, EncoderError) and "out of memory" in str(failed)
    assert len(running[0].token_ids) == 30
    assert loop.scheduler.active_rows == 0 and not loop.scheduler.groups


def test_a_full_queue_refuses_a_request_at_once():
    async def scenario():
        loop = make_loop(step_s=0.005, max_rows=1, max_queued=2)
        first = asyncio.ensure_future(generate(loop, [40, 40, 40]))  # 1 row runs, 2 wait
        await asyncio.sleep(0.02)
        with pytest.raises(QueueFullError, match="server busy: 2 sequences already wait"):
            await generate(loop, [5])
        return loop, await first

    loop, first = asyncio.run(scenario())
    assert [len(r.token_ids) for r in first] == [40, 40, 40]
    assert loop.scheduler.active_rows == 0 and not loop.scheduler.waiting
