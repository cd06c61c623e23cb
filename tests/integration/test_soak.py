"""A soak of mixed requests, and the largest requests the bounds allow, with the memory of every server process
measured before and after: nothing may keep growing."""

from __future__ import annotations

import io
import os
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.images import NOT_AN_IMAGE, text_line, truncated_png
from tests.server_memory import rss_bytes, shm_bytes
from trocr_client import InvalidInputError, TrOCRClient
from trocr_serving.launcher.server import TritonServer

pytestmark = pytest.mark.integration

# Growth allowed after the warm-up, for all server processes together: allocator noise, not a leak.
MAX_RSS_GROWTH_BYTES = 150 * 2**20
# TROCR_SOAK_REQUESTS=20000 for a longer soak.
SOAK_REQUESTS = int(os.environ.get("TROCR_SOAK_REQUESTS", "1500"))


@pytest.fixture(scope="module")
def soaked(built_tiny, tmp_path_factory):
    log = tmp_path_factory.mktemp("soak") / "tritonserver.log"
    with TritonServer(built_tiny.repository, log_file=log, exit_timeout_s=5) as server:
        yield server


LINES = [text_line(f"soak line {i}", width=160 + 40 * i) for i in range(6)]


def mixed_call(server: TritonServer, seed: int) -> str:
    rng = random.Random(seed)
    kind = rng.random()
    with TrOCRClient(server.grpc_url, timeout_s=60) as client:
        try:
            if kind < 0.1:  # a bad image beside a good one: its own error, its neighbour transcribed
                good, bad = client.transcribe([rng.choice(LINES), rng.choice([NOT_AN_IMAGE, truncated_png()])])
                return "partial" if good.ok and good.token_ids and bad.error_code == 3 and bad.error else "wrong"
            images = rng.sample(LINES, rng.randint(1, 4))
            results = client.transcribe(images, max_new_tokens=rng.randint(2, 20), num_beams=rng.choice([1, 1, 2, 4]))
            return "ok" if len(results) == len(images) else "wrong count"
        except InvalidInputError:
            return "unexpected invalid"


def soak(server: TritonServer, requests: int, offset: int = 0) -> dict[str, int]:
    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(lambda i: mixed_call(server, offset + i), range(requests)))
    return {kind: outcomes.count(kind) for kind in set(outcomes)}


def test_a_soak_of_mixed_requests_keeps_memory_flat(soaked):
    requests = SOAK_REQUESTS
    soak(soaked, 200)  # warm-up: allocator pools, shared-memory growth, lazily mapped caches
    rss_before, shm_before = rss_bytes(soaked), shm_bytes(soaked)
    outcomes = soak(soaked, requests, offset=10_000)
    rss_after, shm_after = rss_bytes(soaked), shm_bytes(soaked)
    print(
        f"{requests} mixed requests {outcomes}; RSS of all server processes {rss_before / 2**20:.0f} -> "
        f"{rss_after / 2**20:.0f} MiB; /dev/shm {shm_before / 2**20:.0f} -> {shm_after / 2**20:.0f} MiB"
    )
    assert set(outcomes) <= {"ok", "partial"}, outcomes
    assert outcomes.get("ok", 0) > 0 and outcomes.get("partial", 0) > 0
    assert rss_after - rss_before < MAX_RSS_GROWTH_BYTES
    assert shm_after <= shm_before


def test_memory_is_returned_after_the_largest_allowed_request(soaked):
    side = 6000  # 36 megapixels each; two of them stay under the 100-megapixel bound per request
    buffer = io.BytesIO()
    Image.fromarray(np.tile(np.uint8([0, 255]), (side, side // 2)), mode="L").save(buffer, format="PNG")
    huge = buffer.getvalue()
    with TrOCRClient(soaked.grpc_url, timeout_s=120) as client:
        client.transcribe(LINES[0], max_new_tokens=2)
        rss_before = rss_bytes(soaked)
        assert len(client.transcribe([huge, huge], max_new_tokens=2)) == 2
        client.transcribe(LINES[0], max_new_tokens=2)
    rss_after = rss_bytes(soaked)
    print(f"two 36-megapixel images: RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB")
    assert rss_after - rss_before < MAX_RSS_GROWTH_BYTES
