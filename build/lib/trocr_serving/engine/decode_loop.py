"""The asyncio side of continuous batching: requests await their results while one loop steps the batch.

Each step is vLLM's engine-core step: `scheduler.schedule()` -> `runner.execute(plan)` (the joining images'
encoder call, then the decoder step) -> `scheduler.update_from_output()` -> `runner.commit(update)`. Used by
the engine of the `scheduler` Triton model (a decoupled model whose `async def execute` serves many requests at
once in one process). The runner executes in one worker thread (ONNX Runtime releases the GIL), so the event
loop keeps accepting requests while a step runs; groups removed meanwhile leave the rows after the step.

Encoder and decoder take turns in that one thread, as the scheduler plans: on a CPU the two graphs never
fight over the cores with two thread pools, and on a GPU they run in order on one stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from trocr_client import protocol
from trocr_serving.engine.encoder_runner import EncoderError
from trocr_serving.engine.model_runner import ModelRunner
from trocr_serving.engine.row_scheduler import RowScheduler, SequenceGroup
from trocr_serving.engine.search import SearchParams, SearchResult, new_search
from trocr_serving.refusals import DeadlineExceededError, RequestCancelledError

LOGGER = logging.getLogger(__name__)
CANCEL_CHECK_INTERVAL_S = 0.05


class NullMetrics:
    """What DecodeLoop reports; the Triton model passes an object with the same methods."""

    def step(self, rows: int) -> None: ...
    def encoded(self, images: int) -> None: ...
    def admitted(self, wait_s: float) -> None: ...
    def tokens(self, count: int) -> None: ...
    def occupancy(self, active_rows: int, queued_rows: int) -> None: ...


@dataclass(eq=False)
class Ticket:
    """One request: its groups, how to tell it was cancelled, and its deadline (monotonic seconds)."""

    is_cancelled: Callable[[], bool] | None = None
    deadline: float | None = None
    arrived: float = field(default_factory=time.monotonic)
    groups: list[SequenceGroup] = field(default_factory=list)


class DecodeLoop:
    def __init__(self, scheduler: RowScheduler, runner: ModelRunner, metrics=None):
        self.scheduler = scheduler
        self.runner = runner
        self.metrics = metrics or NullMetrics()
        self._stepping = False  # a step runs in the worker thread: row moves wait for its end
        self._removed: list[SequenceGroup] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._tickets: set[Ticket] = set()
        self._last_cancel_check = 0.0

    def close(self) -> None:
        """Stop the stepping task and the decoder thread (at model unload)."""
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def generate(self, pixels: np.ndarray, params: list[SearchParams], ticket: Ticket) -> list[SearchResult]:
        """Decode each image (UINT8 [3, height, width] rows of `pixels`) with its params; raises QueueFullError
        when the queue has no room for them."""
        self._ensure_running()
        loop = asyncio.get_running_loop()
        ticket.groups = [
            SequenceGroup(new_search(p), image, request=ticket, future=loop.create_future())
            for image, p in zip(pixels, params)
        ]
        try:
            self.scheduler.submit(ticket.groups)
            self._tickets.add(ticket)
            self._wake.set()
            return list(await asyncio.gather(*(group.future for group in ticket.groups)))
        finally:
            self._tickets.discard(ticket)
            for group in ticket.groups:
                self._remove(group)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _remove(self, group: SequenceGroup) -> None:
        """Free a group's rows now, or after the step that is reading them."""
        if self._stepping:
            self._removed.append(group)
        else:
            self.runner.move(self.scheduler.remove(group))

    def _end_step(self) -> None:
        self._stepping = False
        for group in self._removed:
            self._remove(group)
        self._removed.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            plan = self.scheduler.schedule()
            now = time.monotonic()
            for load in plan.loads:
                self.metrics.admitted(now - load.group.request.arrived)
            self.metrics.occupancy(self.scheduler.active_rows, self.scheduler.queued_rows)
            if not plan.rows:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._stepping = True
            try:
                candidates = await loop.run_in_executor(self._executor, self.runner.execute, plan)
            except EncoderError as exc:  # fail the images of that call; the running rows did not step
                LOGGER.exception("encoder call failed")
                self._end_step()
                for load in plan.loads:
                    self._fail(load.group, exc)
                continue
            except Exception as exc:  # fail the sequences in this step, keep the loop alive
                LOGGER.exception("decoder step failed")
                self._end_step()
                for group in list(self.scheduler.groups):
                    self._fail(group, RuntimeError(f"decoder step failed: {exc}"))
                continue
            if plan.loads:
                self.metrics.encoded(len(plan.loads))
            update = self.scheduler.update_from_output(candidates)
            self.runner.commit(update)
            self._end_step()
            self.metrics.step(plan.rows)
            self.metrics.tokens(plan.rows)
            for group in update.finished:
                future = group.future
                if not future.done():
                    future.set_result(group.search.result())
            self._expire_tickets()

    def _fail(self, group: SequenceGroup, error: Exception) -> None:
        self._remove(group)
        future = group.future
        if not future.done():
            future.set_exception(error)

    def _expire_tickets(self) -> None:
        now = time.monotonic()
        if now - self._last_cancel_check < CANCEL_CHECK_INTERVAL_S:
            return
        self._last_cancel_check = now
        for ticket in list(self._tickets):
            if ticket.deadline is not None and now > ticket.deadline:
                error: Exception = DeadlineExceededError(f"{protocol.DEADLINE_MESSAGES[0]} while decoding")
            elif ticket.is_cancelled is not None and ticket.is_cancelled():
                error = RequestCancelledError("request cancelled by the client")
            else:
                continue
            for group in ticket.groups:
                self._fail(group, error)
