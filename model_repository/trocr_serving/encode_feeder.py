"""Batches encoder work by what accumulated: one encoder call in flight, the next takes all that waits.

At low load a request is encoded at once (no batching delay); under load the images that arrived during
a call go together in the next one, so they also join the decoder batch together. On a CPU the encoder
costs the same per image at any batch size and dominates the cost of an image, so this matters for the
decoder: arrivals trickling in one by one would each decode nearly alone, while a burst shares every
decoder step (measured with `trocr-bench`; see the README). The engine runs the encoder itself: this is the
only batching of encoder work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

EncodeBatch = Callable[[np.ndarray], Awaitable[np.ndarray]]


class EncodeFeeder:
    def __init__(self, encode_batch: EncodeBatch, max_batch: int):
        self.encode_batch = encode_batch
        self.max_batch = max_batch
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._running = False

    async def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Cross-attention keys/values for these images, encoded together with whatever else waits."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((pixels, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, rows = [], 0
                while self._pending and (not batch or rows + len(self._pending[0][0]) <= self.max_batch):
                    item = self._pending.pop(0)
                    batch.append(item)
                    rows += len(item[0])
                await self._run(batch)
        finally:
            self._running = False

    async def _run(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        pixels = np.concatenate([images for images, _ in batch])
        try:
            outputs = await self.encode_batch(pixels)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for images, future in batch:
            if not future.done():
                future.set_result(outputs[start : start + len(images)])
            start += len(images)
