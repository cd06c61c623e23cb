"""Fixtures that run the real Triton server as a subprocess on repositories the tests built.

The model is built before the server starts, so server start-up timeouts never include the export.
`TritonServer` picks free loopback ports (retrying on a clash), polls readiness while watching for the
process dying, and stops with SIGTERM then SIGKILL. A failing test prints the end of the server log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Built
from trocr_client import TrOCRClient
from trocr_serving.launcher.server import TritonServer


@dataclass
class Served:
    server: TritonServer
    built: Built

    @property
    def model(self):
        return self.built.model

    @property
    def processor(self):
        return self.built.processor

    def client(self) -> TrOCRClient:
        return TrOCRClient(self.server.grpc_url, timeout_s=300)


@contextlib.contextmanager
def running_server(built: Built, log_dir: Path) -> Iterator[TritonServer]:
    """A server on the built repository, with its watchdog; the log goes beside the repository (nothing is
    written into a model repository at serve time)."""
    server = TritonServer(built.repository, log_file=log_dir / "tritonserver.log", exit_timeout_s=5)
    server.start(timeout_s=180)
    try:
        yield server
    finally:
        server.close()


def _serve(built: Built, log_dir: Path):
    with running_server(built, log_dir) as server:
        yield Served(server, built)


@pytest.fixture(scope="session")
def tiny(built_tiny, tmp_path_factory):
    yield from _serve(built_tiny, tmp_path_factory.mktemp("tiny-server"))


@pytest.fixture(scope="session")
def small(built_small, tmp_path_factory):
    yield from _serve(built_small, tmp_path_factory.mktemp("small-server"))


@pytest.fixture(scope="session")
def synthetic(built_synthetic, tmp_path_factory):
    yield from _serve(built_synthetic, tmp_path_factory.mktemp("synthetic-server"))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("tiny", "small", "synthetic"):
            served = item.funcargs.get(name)
            if served is not None:
                report.sections.append((f"tritonserver log ({name})", served.server.log_tail(80)))
