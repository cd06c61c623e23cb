"""Many requests in flight in one instance of a non-decoupled Python model (servers with CONCURRENT_BLS).

Triton hands an instance its next requests once execute() returns, and from release 24.06 (python_backend
PR #364) a non-decoupled model may return None and answer each request later through its response sender.
So execute() hands each request to an event loop on a thread of the instance, where its coroutine awaits
its BLS call beside the others, and returns. The python_backend documentation (Async Execute) says that the
server does not bound how many requests an instance's event loop takes: `limit` does, and execute() blocks
while the instance holds that many, so that further requests wait in Triton's bounded queue (load shedding
stays Triton's).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor

from trocr_serving.server_release import CONCURRENT_BLS, ServerRelease

LOGGER = logging.getLogger(__name__)


def requests_per_instance(configured: int, release: ServerRelease) -> int:
    """How many requests an instance holds at once on this server."""
    if configured > 1 and not release.has(CONCURRENT_BLS):
        # WAR(2.51): one request at a time per instance: an instance that kept many requests in flight made many
        # BLS calls at once from one stub, and the stub, then tritonserver, crashed (SIGSEGV) under load.
        # Fixed in: 2.71 (26.07), python_backend PR #439: a use-after-free in async_exec's callback
        # (server_release.CONCURRENT_BLS).
        LOGGER.warning("requests_per_instance %d needs Triton 2.71 or later: 1 on this server", configured)
        return 1
    return configured


class RequestLoop:
    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._loop = asyncio.new_event_loop()
        # async_exec waits for a call's first response on a thread of the loop's default executor: one per request.
        self._executor = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="bls-call")
        self._loop.set_default_executor(self._executor)
        self._thread = threading.Thread(target=self._loop.run_forever, name="request-loop", daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine) -> None:
        """Run a request's coroutine on the loop; blocks while `limit` requests are in flight."""
        self._slots.acquire()
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        future.add_done_callback(lambda _: self._slots.release())

    def close(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the requests in flight, then stop the loop and its thread. False if some
        were still in flight (their calls are left to the server's unload)."""
        deadline = time.monotonic() + timeout_s
        finished = all(self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())) for _ in range(self.limit))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if finished:
            self._loop.close()
        return finished
