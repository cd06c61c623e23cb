"""The synchronous client: `AsyncTrOCRClient` (trocr_client.aio) run on an event loop of its own, with the
same methods and options, for code that does not use asyncio."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Iterable, Iterator

from trocr_client.aio import DEFAULT_URL, AsyncTrOCRClient
from trocr_client.images import ImageLike
from trocr_client.wire import Result, build_inputs, parse_outputs

__all__ = ["DEFAULT_URL", "Result", "TrOCRClient", "build_inputs", "parse_outputs", "transcribe"]


def _blocking(method):
    """AsyncTrOCRClient's `method`, run to its end on the client's loop (same signature and documentation)."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return self._run(method(self._async, *args, **kwargs))

    return call


class TrOCRClient:
    def __init__(self, urls: str | list[str] = DEFAULT_URL, **options):
        """`options`: those of AsyncTrOCRClient (timeout_s, images_per_request, max_concurrency, retry,
        balancing, tls, headers, ...)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="trocr-client", daemon=True)
        self._thread.start()

        async def create() -> AsyncTrOCRClient:  # its gRPC channels belong to the loop that runs them
            return AsyncTrOCRClient(urls, **options)

        self._async = self._run(create())

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def urls(self) -> list[str]:
        return self._async.urls

    connect = _blocking(AsyncTrOCRClient.connect)
    is_ready = _blocking(AsyncTrOCRClient.is_ready)
    transcribe = _blocking(AsyncTrOCRClient.transcribe)

    @functools.wraps(AsyncTrOCRClient.transcribe_stream)
    def transcribe_stream(self, *args, **kwargs) -> Iterator[Result]:
        """See AsyncTrOCRClient.transcribe_stream (the images are read on the client's own thread)."""
        stream = self._async.transcribe_stream(*args, **kwargs)
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> TrOCRClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def transcribe(images: ImageLike | Iterable[ImageLike], url: str = DEFAULT_URL, **kwargs) -> list[Result]:
    """One-shot helper: `transcribe(["line.png"]) -> [Result(text, score, ...)]`."""
    with TrOCRClient(url) as client:
        return client.transcribe(images, **kwargs)
