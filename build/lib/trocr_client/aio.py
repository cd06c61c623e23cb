"""The asyncio client: any number of images, split into requests, sent to one or several servers with bounded
concurrency, retried where that is safe, answered in input order with each image's own result or error.

`TrOCRClient` (trocr_client.client) is this client run on an event loop of its own, with the same methods.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from trocr_client import protocol
from trocr_client.endpoints import Endpoint, EndpointPool
from trocr_client.errors import (
    ContractError,
    DeadlineExceededError,
    InvalidInputError,
    ServerUnavailableError,
    TrOCRError,
    from_triton,
)
from trocr_client.images import ImageLike, encode_image
from trocr_client.retry import RetryPolicy
from trocr_client.wire import Result, build_inputs, parse_outputs

DEFAULT_URL = "127.0.0.1:8001"
# The tensors this client sends and reads, by name and type: checked against the model's metadata at connect.
EXPECTED_INPUTS = {spec.name: spec.datatype for spec in protocol.INPUTS}
EXPECTED_OUTPUTS = {spec.name: spec.datatype for spec in protocol.OUTPUTS}
DEFAULT_RETRY = RetryPolicy()
# tritonclient's channel options, and a short reconnection backoff: gRPC's own grows to 120 s, so a channel
# to a server that restarted would refuse every retry for minutes after the server is back.
KEEPALIVE = grpcaio.KeepAliveOptions()
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", grpcaio.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", grpcaio.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.keepalive_time_ms", KEEPALIVE.keepalive_time_ms),
    ("grpc.keepalive_timeout_ms", KEEPALIVE.keepalive_timeout_ms),
    ("grpc.keepalive_permit_without_calls", KEEPALIVE.keepalive_permit_without_calls),
    ("grpc.http2.max_pings_without_data", KEEPALIVE.http2_max_pings_without_data),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
IMAGE_PREFIX = re.compile(r"^image (\d+): ")


@dataclass(frozen=True)
class Tls:
    """gRPC over TLS: the CA that signed the servers' certificates (None: the system's), and for mutual TLS the
    client's own key and certificate chain (PEM files)."""

    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None


@dataclass(frozen=True)
class Generation:
    """The decoding parameters of a call (None: the model's defaults)."""

    max_new_tokens: int | None = None
    num_beams: int | None = None
    ignore_eos: bool | None = None  # benchmarks only: exactly max_new_tokens tokens


def as_list(images: ImageLike | Iterable[ImageLike]) -> Iterable[ImageLike]:
    """One image or many: a path, bytes or an array is one image."""
    if isinstance(images, str | bytes | bytearray | np.ndarray | Path) or not isinstance(
        images, Iterable | AsyncIterable
    ):
        return [images]
    return images


def _encoded_or_error(image: ImageLike, index: int) -> bytes | Result:
    """The image's bytes, or its own error (a file that cannot be read, a bad array): never sent."""
    try:
        return encode_image(image)
    except InvalidInputError as exc:
        code = protocol.ERROR_CODE_INVALID_ARGUMENT
        return Result("", 0.0, (), code, f"image {index}: {exc}", index)


class AsyncTrOCRClient:
    def __init__(
        self,
        urls: str | Sequence[str] = DEFAULT_URL,
        *,
        model_name: str = protocol.MODEL_NAME,
        timeout_s: float | None = 120.0,
        images_per_request: int = 16,
        max_concurrency: int = 4,
        retry: RetryPolicy = DEFAULT_RETRY,
        balancing: str = "round_robin",
        eject_for_s: float = 5.0,
        tls: Tls | None = None,
        headers: dict[str, str] | None = None,
        seed: int | None = None,
    ):
        """`urls`: one server or several (balanced, failing ones ejected for `eject_for_s`); `timeout_s`: the
        deadline of a whole call, retries included (also sent to the server, which ends work past it);
        `headers`: gRPC metadata on every call (for example {"authorization": "Bearer ..."} for a gateway)."""
        if not 1 <= images_per_request <= protocol.MAX_IMAGES_PER_REQUEST:
            raise ValueError(f"images_per_request must be 1..{protocol.MAX_IMAGES_PER_REQUEST}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.pool = EndpointPool([urls] if isinstance(urls, str) else list(urls), balancing, eject_for_s)
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.images_per_request = images_per_request
        self.max_concurrency = max_concurrency
        self.retry = retry
        self.tls = tls
        self.headers = dict(headers or {})
        self._rng = random.Random(seed)
        self._clients: dict[str, grpcaio.InferenceServerClient] = {}
        # Failed tries that were tried again, by status: what the retries hid from the caller.
        self.retried: collections.Counter[str] = collections.Counter()

    @property
    def urls(self) -> list[str]:
        return [endpoint.url for endpoint in self.pool.endpoints]

    def _client(self, url: str) -> grpcaio.InferenceServerClient:
        if url not in self._clients:
            tls = self.tls
            self._clients[url] = grpcaio.InferenceServerClient(
                url,
                ssl=tls is not None,
                root_certificates=str(tls.root_certificates) if tls and tls.root_certificates else None,
                private_key=str(tls.private_key) if tls and tls.private_key else None,
                certificate_chain=str(tls.certificate_chain) if tls and tls.certificate_chain else None,
                channel_args=CHANNEL_ARGS,
            )
        return self._clients[url]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def __aenter__(self) -> AsyncTrOCRClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def is_ready(self) -> bool:
        """Whether some server serves the model now."""
        for url in self.urls:
            try:
                if await self._client(url).is_model_ready(self.model_name, headers=self.headers):
                    return True
            except InferenceServerException:
                continue
        return False

    async def connect(self) -> None:
        """Check, before the first request, that the servers serve the model with the tensors this client sends
        and reads: ContractError when one serves something else; a server that cannot be reached is ejected for
        now; ServerUnavailableError when none can."""
        problems = []
        for endpoint in self.pool.endpoints:
            try:
                await self._check_contract(endpoint.url)
            except ServerUnavailableError as exc:
                problems.append(f"{endpoint.url}: {exc}")
                endpoint.ejected_until = time.monotonic() + self.pool.eject_for_s
        if len(problems) == len(self.pool.endpoints):
            raise ServerUnavailableError("no server is ready: " + "; ".join(problems))

    async def _check_contract(self, url: str) -> None:
        client = self._client(url)
        try:
            if not await client.is_model_ready(self.model_name, headers=self.headers):
                raise ServerUnavailableError(f"model {self.model_name!r} is not ready")
            metadata = await client.get_model_metadata(self.model_name, headers=self.headers, as_json=True)
        except InferenceServerException as exc:
            raise _unavailable(from_triton(exc)) from None
        problems = []
        for kind, expected in (("input", EXPECTED_INPUTS), ("output", EXPECTED_OUTPUTS)):
            served = {tensor["name"]: tensor["datatype"] for tensor in metadata.get(f"{kind}s", [])}
            for name, datatype in expected.items():
                if served.get(name) != datatype:
                    problems.append(f"{kind} {name} {datatype} (served: {served.get(name, 'absent')})")
        if problems:
            raise ContractError(
                f"{url}: model {self.model_name!r} does not match this client: expected " + ", ".join(problems)
            )

    async def transcribe(
        self,
        images: ImageLike | Iterable[ImageLike],
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        timeout_s: float | None = None,
        ignore_eos: bool | None = None,
    ) -> list[Result]:
        """Every image's Result, in input order (`index` = its position; a bad image has its own `error`).
        Raises a TrOCRError when the call fails as a whole (every image bad, no server, past the deadline)."""
        stream = self.transcribe_stream(images, max_new_tokens, num_beams, timeout_s, ignore_eos)
        results = [result async for result in stream]
        if results and not any(result.ok for result in results):
            # (each image's own code is INVALID_ARGUMENT: the call's status says the same)
            errors = "; ".join(result.error for result in results[:3])
            raise InvalidInputError(f"every image is bad: {errors}", "INVALID_ARGUMENT")
        return results

    async def transcribe_stream(
        self,
        images: ImageLike | Iterable[ImageLike] | AsyncIterable[ImageLike],
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        timeout_s: float | None = None,
        ignore_eos: bool | None = None,
    ) -> AsyncIterator[Result]:
        """Results in input order as they come, for a stream of images of any length: at most
        `max_concurrency` requests of `images_per_request` images in flight."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        generation = Generation(max_new_tokens, num_beams, ignore_eos)
        in_flight: deque[asyncio.Task] = deque()
        try:
            async for start, chunk in self._chunks(as_list(images)):
                in_flight.append(asyncio.ensure_future(self._answer(start, chunk, generation, deadline)))
                if len(in_flight) >= self.max_concurrency:
                    for result in await in_flight.popleft():
                        yield result
            while in_flight:
                for result in await in_flight.popleft():
                    yield result
        finally:
            for task in in_flight:
                task.cancel()

    async def _chunks(self, images) -> AsyncIterator[tuple[int, list[bytes | Result]]]:
        chunk: list[bytes | Result] = []
        start = index = 0
        iterator = images if isinstance(images, AsyncIterable) else _aiter(images)
        async for image in iterator:
            chunk.append(_encoded_or_error(image, index))
            index += 1
            if len(chunk) == self.images_per_request:
                yield start, chunk
                start, chunk = index, []
        if chunk:
            yield start, chunk

    async def _answer(self, start: int, chunk: list[bytes | Result], generation: Generation, deadline) -> list[Result]:
        """The chunk's results: its bad inputs' own errors, the others from one successful request."""
        rows = [i for i, item in enumerate(chunk) if isinstance(item, bytes)]
        answered = await self._infer_per_image([chunk[i] for i in rows], generation, deadline) if rows else []
        results = list(chunk)
        for row, result in zip(rows, answered):
            index = start + row
            error = IMAGE_PREFIX.sub(f"image {index}: ", result.error)  # the server numbers within the request
            results[row] = dataclasses.replace(result, index=index, error=error)
        return results

    async def _infer_per_image(self, encoded: list[bytes], generation: Generation, deadline) -> list[Result]:
        """Like _infer, but a request refused because its images are all bad gives each image its own error (the
        server names the first few in one message: each is sent alone to learn its own), as it would amid good
        images; any other refusal stays the whole call's."""
        try:
            return await self._infer(encoded, generation, deadline)
        except InvalidInputError as exc:
            message = str(exc)
            if len(encoded) == 1 and IMAGE_PREFIX.match(message):
                return [Result("", 0.0, (), protocol.ERROR_CODE_INVALID_ARGUMENT, message, 0)]
            if len(encoded) == 1 or not message.startswith(protocol.ALL_IMAGES_BAD):
                raise
        alone = [await self._infer_per_image([image], generation, deadline) for image in encoded]
        return [dataclasses.replace(result, index=row) for row, (result,) in enumerate(alone)]

    async def _infer(self, encoded: list[bytes], generation: Generation, deadline: float | None) -> list[Result]:
        """One request, retried on retryable errors (on another server where there is one) within the deadline;
        its answer is used once, whichever try gave it."""
        attempt = 0
        while True:
            attempt += 1
            remaining_s = None if deadline is None else deadline - time.monotonic()
            if remaining_s is not None and remaining_s <= 0:
                raise DeadlineExceededError(f"deadline exceeded after {attempt - 1} tries")
            endpoint = self.pool.pick(time.monotonic())
            try:
                response = await self._send(endpoint, encoded, generation, remaining_s)
            except TrOCRError as error:
                self.pool.done(endpoint, time.monotonic(), failed_retryable=error.retryable)
                left_s = None if deadline is None else deadline - time.monotonic()
                wait_s = self.retry.next_wait_s(attempt, error.retryable, left_s, self._rng)
                if wait_s is None:
                    raise
                self.retried[error.status or type(error).__name__] += 1
                await asyncio.sleep(wait_s)
                continue
            self.pool.done(endpoint, time.monotonic())
            return parse_outputs(response)

    async def _send(self, endpoint: Endpoint, encoded, generation: Generation, remaining_s: float | None):
        inputs = build_inputs(encoded, generation.max_new_tokens, generation.num_beams, generation.ignore_eos)
        try:
            return await self._client(endpoint.url).infer(
                self.model_name,
                inputs,
                client_timeout=remaining_s,
                timeout=int(remaining_s * 1e6) if remaining_s else None,
                headers=self.headers,
            )
        except InferenceServerException as exc:
            raise from_triton(exc) from None
        except OSError as exc:
            raise ServerUnavailableError(f"{endpoint.url}: {exc}") from exc


async def _aiter(items: Iterable):
    for item in items:
        yield item


def _unavailable(error: TrOCRError) -> TrOCRError:
    """At connect, a model that is absent is this server not serving it (another may)."""
    if error.status == "NOT_FOUND":
        return ServerUnavailableError(str(error), error.status)
    return error
