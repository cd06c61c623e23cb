"""Fixtures that build repositories and run the real Triton server as a subprocess.

The model is built before the server starts, so server start-up timeouts never include the export.
`TritonServer` picks free loopback ports (retrying on a clash), polls readiness while watching for the
process dying, and stops with SIGTERM then SIGKILL. A failing test prints the end of the server log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from transformers import AutoProcessor, VisionEncoderDecoderModel

from trocr_build.repository import build_repository
from trocr_client import TrOCRClient
from trocr_serving.launcher import TritonServer


@dataclass
class Served:
    server: TritonServer
    model: VisionEncoderDecoderModel
    processor: object
    repository: Path

    def client(self) -> TrOCRClient:
        return TrOCRClient(self.server.grpc_url, timeout_s=300)


def _serve(model_name: str, tmp_path_factory) -> Served:
    cache = tmp_path_factory.getbasetemp() / "models"
    repository = tmp_path_factory.mktemp(model_name.replace(":", "-"))
    info = build_repository(model_name, repository, cache_dir=cache)
    model = VisionEncoderDecoderModel.from_pretrained(info["source"]).eval()
    processor = AutoProcessor.from_pretrained(info["source"])
    server = TritonServer(repository, log_file=repository / "tritonserver.log")
    server.start(timeout_s=180)
    return Served(server, model, processor, repository)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    served = _serve("random:tiny", tmp_path_factory)
    yield served
    served.server.close()


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    served = _serve("random:small", tmp_path_factory)
    yield served
    served.server.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("tiny", "small"):
            served = item.funcargs.get(name)
            if served is not None:
                report.sections.append((f"tritonserver log ({name})", served.server.log_tail(80)))
