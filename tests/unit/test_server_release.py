"""The serving release decides which mechanisms the models use (trocr_serving.server_release): each feature
from the release whose source has it, the 2.51 workarounds where the release is older or not known."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from trocr_serving.launcher.server import ServerInstall
from trocr_serving.server_release import (
    BLS_CANCEL,
    BLS_ERROR_CODES,
    CONCURRENT_BLS,
    FEATURES,
    PIP_SERVER_VERSION,
    STUB_READINESS,
    VERSION_ENV,
    ServerRelease,
    parse_version,
)
from trocr_serving.triton_adapters.request_loop import RequestLoop, requests_per_instance


def test_versions_are_read_as_the_server_and_the_containers_write_them():
    assert parse_version("2.51.0") == (2, 51)
    assert parse_version("2.73.0dev") == (2, 73)
    with pytest.raises(ValueError, match="not a Triton version: '26.09'"):
        parse_version("26.09")  # NVIDIA_TRITON_SERVER_VERSION, the container release, is not the version


def test_the_pip_server_gets_every_workaround_and_the_container_every_mechanism():
    pip = ServerRelease.of(PIP_SERVER_VERSION)
    container = ServerRelease.of("2.73.0")  # NVIDIA's 26.09, the images' release
    assert not any(pip.has(feature) for feature in FEATURES)
    assert all(container.has(feature) for feature in FEATURES)
    assert pip.describe() == "Triton 2.51: the 2.51 workarounds"


@pytest.mark.parametrize(
    ("feature", "before", "from_"),
    [
        (BLS_ERROR_CODES, "2.56.0", "2.57.0"),
        (BLS_CANCEL, "2.56.0", "2.57.0"),
        (STUB_READINESS, "2.64.0", "2.65.0"),
        (CONCURRENT_BLS, "2.70.0", "2.71.0"),
    ],
)
def test_each_feature_starts_at_its_release(feature, before, from_):
    assert not ServerRelease.of(before).has(feature)
    assert ServerRelease.of(from_).has(feature)


def test_a_release_not_known_keeps_every_workaround(caplog):
    release = ServerRelease.current({})
    assert release.version is None and not any(release.has(feature) for feature in FEATURES)
    assert f"{VERSION_ENV} is not set" in caplog.text
    assert ServerRelease.current({VERSION_ENV: "2.71.0"}).has(CONCURRENT_BLS)


def test_the_launcher_tells_the_pip_servers_models_its_release_and_leaves_a_stock_servers_own():
    assert ServerInstall().environment() == {VERSION_ENV: PIP_SERVER_VERSION}
    assert ServerInstall(Path("/opt/tritonserver/bin/tritonserver")).environment() == {}  # the container's ENV


def test_an_instance_holds_many_requests_only_where_the_server_allows_it(caplog):
    assert requests_per_instance(32, ServerRelease.of("2.71.0")) == 32
    assert requests_per_instance(32, ServerRelease.of(PIP_SERVER_VERSION)) == 1
    assert "requests_per_instance 32 needs Triton 2.71" in caplog.text
    assert requests_per_instance(1, ServerRelease(None)) == 1


def test_the_request_loop_holds_at_most_its_limit_and_blocks_the_caller_beyond():
    limit, held, most = 3, 0, 0
    lock = threading.Lock()
    release = threading.Event()

    async def request():
        nonlocal held, most
        with lock:
            held += 1
            most = max(most, held)
        await asyncio.get_running_loop().run_in_executor(None, release.wait)  # as a BLS call waits
        with lock:
            held -= 1

    loop = RequestLoop(limit)
    for _ in range(limit):
        loop.submit(request())
    blocked = threading.Thread(target=loop.submit, args=(request(),))
    blocked.start()
    time.sleep(0.3)
    assert blocked.is_alive() and most == limit  # the caller (execute) waits: Triton queues the rest
    release.set()
    blocked.join(timeout=5)
    assert not blocked.is_alive()
    assert loop.close(timeout_s=5)
    assert held == 0 and most == limit


def test_closing_the_request_loop_gives_up_on_a_request_that_never_ends():
    never = threading.Event()

    async def request():
        await asyncio.get_running_loop().run_in_executor(None, never.wait)

    loop = RequestLoop(2)
    loop.submit(request())
    assert loop.close(timeout_s=0.2) is False
    never.set()
