"""The client library's logic without a server: retries and backoff, endpoint balancing and ejection, and the
async client's ordering, global indices, concurrency bound and retries over a scripted transport."""

from __future__ import annotations

import asyncio
import hashlib
import random

import numpy as np
import pytest

from tests.images import text_line
from trocr_client import AsyncTrOCRClient, InvalidInputError, RetryPolicy, ServerUnavailableError, protocol
from trocr_client.endpoints import EndpointPool


def test_backoff_grows_to_its_cap_with_full_jitter_and_stops_at_the_deadline():
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.1, max_backoff_s=0.4)
    rng = random.Random(0)
    waits = [[policy.backoff_s(attempt, rng) for _ in range(200)] for attempt in (1, 2, 3, 4)]
    assert [max(w) <= cap for w, cap in zip(waits, (0.1, 0.2, 0.4, 0.4))] == [True] * 4
    assert min(waits[3]) < 0.1 < max(waits[3])  # spread over [0, cap]
    assert policy.next_wait_s(1, retryable=False, remaining_s=None, rng=rng) is None
    assert policy.next_wait_s(5, retryable=True, remaining_s=None, rng=rng) is None  # no tries left
    assert policy.next_wait_s(1, retryable=True, remaining_s=0.0, rng=rng) is None  # no time left
    assert policy.next_wait_s(1, retryable=True, remaining_s=10.0, rng=rng) is not None


def test_round_robin_skips_ejected_endpoints_until_they_come_back():
    pool = EndpointPool(["a", "b", "c"], eject_for_s=5.0)
    picks = [pool.pick(0.0) for _ in range(3)]
    assert [e.url for e in picks] == ["a", "b", "c"]
    pool.done(picks[1], now=1.0, failed_retryable=True)
    assert {pool.pick(2.0).url for _ in range(4)} == {"a", "c"}
    assert "b" in {pool.pick(7.0).url for _ in range(3)}  # back after eject_for_s
    again = next(e for e in pool.endpoints if e.url == "b")
    pool.done(again, now=8.0, failed_retryable=True)  # a second failure in a row: out twice as long
    assert again.ejected_until == 18.0
    pool.done(again, now=20.0)  # a success resets the count
    assert again.failures == 0


def test_least_outstanding_and_every_endpoint_ejected():
    pool = EndpointPool(["a", "b"], balancing="least_outstanding")
    first = pool.pick(0.0)
    assert pool.pick(0.0).url != first.url  # the other one has fewer in flight
    for endpoint in list(pool.endpoints):
        endpoint.ejected_until = 100.0
    assert pool.pick(1.0).url in {"a", "b"}  # all out: a request still has somewhere to go


def digest(image: bytes) -> str:
    return hashlib.sha1(image).hexdigest()[:12]


class FakeResponse:
    def __init__(self, images: list[bytes]):
        rows = len(images)
        bad = [image == b"bad" for image in images]
        self.arrays = {
            protocol.OUTPUT_TEXT: np.array([b"" if b else digest(image).encode() for image, b in zip(images, bad)]),
            protocol.OUTPUT_SCORE: np.zeros(rows, dtype=np.float32),
            protocol.OUTPUT_TOKEN_IDS: np.zeros((rows, 1), dtype=np.int32),
            protocol.OUTPUT_ERROR_CODE: np.array([3 if b else 0 for b in bad], dtype=np.int32),
            protocol.OUTPUT_ERROR: np.array([f"image {i}: bad".encode() if b else b"" for i, b in enumerate(bad)]),
        }

    def as_numpy(self, name):
        return self.arrays[name]


class ScriptedServer:
    """Answers each request after a short wait; fails the first `failures` tries with UNAVAILABLE."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.in_flight = self.most_in_flight = 0
        self.requests: list[list[bytes]] = []

    async def send(self, endpoint, encoded, generation, remaining_s):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01 * (1 + len(self.requests) % 3))  # answers come back out of order
            self.requests.append(list(encoded))
            if all(image == b"bad" for image in encoded):  # the server refuses a request of bad images only
                one = "image 0: bad"
                raise InvalidInputError(one if len(encoded) == 1 else f"{protocol.ALL_IMAGES_BAD}: {one}; ...")
            if self.failures:
                self.failures -= 1
                raise ServerUnavailableError(f"{endpoint.url}: server busy", "UNAVAILABLE")
            return FakeResponse(list(encoded))
        finally:
            self.in_flight -= 1


def client_with(server: ScriptedServer, **options) -> AsyncTrOCRClient:
    client = AsyncTrOCRClient(["a:1", "b:1"], seed=0, **options)
    client._send = server.send
    return client


def lines(count: int) -> list[bytes]:
    return [text_line(f"line {i}") for i in range(count)]


def test_results_come_in_input_order_with_global_indices_and_bounded_concurrency():
    server = ScriptedServer()
    images = lines(23)
    images[17] = b"bad"
    results = asyncio.run(client_with(server, images_per_request=4, max_concurrency=3).transcribe(images))
    assert [r.index for r in results] == list(range(23))
    assert [r.text for r in results if r.ok] == [digest(image) for image in images if image != b"bad"]
    assert results[17].error == "image 17: bad"  # the server's index within its request, made global
    assert sorted(len(r) for r in server.requests) == [3, 4, 4, 4, 4, 4] and server.most_in_flight == 3


def test_retryable_failures_are_retried_and_each_image_answered_once():
    server = ScriptedServer(failures=2)
    results = asyncio.run(client_with(server, images_per_request=5).transcribe(lines(5)))
    assert len(server.requests) == 3 and [r.index for r in results] == [0, 1, 2, 3, 4]


def test_a_call_fails_as_a_whole_when_retries_run_out_or_every_image_is_bad(tmp_path):
    server = ScriptedServer(failures=10)
    with pytest.raises(ServerUnavailableError, match="server busy"):
        asyncio.run(client_with(server, retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.01)).transcribe(lines(2)))
    assert len(server.requests) == 2
    missing = tmp_path / "missing.png"
    with pytest.raises(InvalidInputError, match=f"every image is bad: image 0: {missing}: cannot read it"):
        asyncio.run(client_with(ScriptedServer()).transcribe([missing]))


def test_a_file_that_cannot_be_read_is_that_image_s_error_and_never_sent(tmp_path):
    server = ScriptedServer()
    missing = str(tmp_path / "missing.png")
    results = asyncio.run(client_with(server).transcribe([text_line("a"), missing, text_line("b")]))
    assert [r.ok for r in results] == [True, False, True] and "cannot read it: No such file" in results[1].error
    assert sum(len(r) for r in server.requests) == 2


def test_a_request_of_bad_images_only_becomes_those_images_errors_not_the_call_s():
    server = ScriptedServer()
    images = lines(5)
    images[2] = images[3] = b"bad"
    results = asyncio.run(client_with(server, images_per_request=2).transcribe(images))
    assert [r.ok for r in results] == [True, True, False, False, True]
    assert [results[2].error, results[3].error] == ["image 2: bad", "image 3: bad"]
    assert sorted(len(r) for r in server.requests) == [1, 1, 1, 2, 2]  # the refused request's images, one by one
