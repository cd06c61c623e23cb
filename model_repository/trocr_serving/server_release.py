"""Which Triton release serves, and which of its mechanisms the models use instead of a 2.51 workaround.

The release is read from `TRITON_SERVER_VERSION` (e.g. "2.73.0"): NVIDIA's containers set it (the server's
build.py writes `ENV TRITON_SERVER_VERSION` into every image), the launcher sets it for the pip server, and
the backend stubs inherit it from the server. Once the server is ready, the launcher checks it against the
version the server reports (`/v2`). Without it (a server started some other way) every model keeps the 2.51
workarounds, which work on every release.

Each feature below names the release whose python_backend (or core) first has it, read from that release's
source: the branch `r<container release>` of triton-inference-server/python_backend and /core.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

LOGGER = logging.getLogger(__name__)

VERSION_ENV = "TRITON_SERVER_VERSION"
PIP_SERVER_VERSION = "2.51.0"  # nvidia-pytriton 0.7.0's tritonserver (container release 24.10)
_VERSION = re.compile(r"^2\.(\d+)")  # Triton 2.x; a container release such as "26.09" is not a version


@dataclass(frozen=True)
class Feature:
    what: str
    since: tuple[int, int]  # Triton version (major, minor)
    container: str  # the NVIDIA container release of that version
    source: str  # the change that brought it


# A called model's error response keeps its code on the way back through BLS (request_executor.cc reads the
# response's TRITONSERVER_ErrorCode into the PbError); before, the caller saw INTERNAL.
BLS_ERROR_CODES = Feature("error codes through BLS", (2, 57), "25.04", "python_backend PR #398")
# ResponseIterator.cancel(): the caller cancels a decoupled BLS request, and the called model sees
# request.is_cancelled().
BLS_CANCEL = Feature("cancel() on a decoupled BLS response iterator", (2, 57), "25.04", "python_backend PR #398")
# A model whose stub died is not ready (TRITONBACKEND_ModelInstanceReady: /v2/models/<m>/ready and
# pb_utils.is_model_ready); from 2.68 (26.04, core #473) /v2/health/ready too.
STUB_READINESS = Feature(
    "model readiness that reports a dead stub", (2, 65), "26.01", "python_backend PR #423, core PR #461"
)
# async_exec's callback no longer captures the stub by reference (a use-after-free when the calling coroutine
# returned before the call ended: many BLS calls in flight from one stub crashed it), nor deadlocks decoupled BLS.
CONCURRENT_BLS = Feature("many BLS calls in flight from one stub", (2, 71), "26.07", "python_backend PR #439")
FEATURES = (BLS_ERROR_CODES, BLS_CANCEL, STUB_READINESS, CONCURRENT_BLS)


def parse_version(text: str) -> tuple[int, int]:
    match = _VERSION.match(text.strip())
    if match is None:
        raise ValueError(f"not a Triton version: {text!r} (expected e.g. '2.73.0')")
    return 2, int(match.group(1))


@dataclass(frozen=True)
class ServerRelease:
    version: tuple[int, int] | None  # None: not known, every workaround applies

    @classmethod
    def of(cls, text: str) -> ServerRelease:
        return cls(parse_version(text))

    @classmethod
    def current(cls, environ: Mapping[str, str] = os.environ) -> ServerRelease:
        """The release this process serves under, from the environment the server passed on."""
        text = environ.get(VERSION_ENV)
        if not text:
            LOGGER.warning("%s is not set: using the workarounds for Triton %s", VERSION_ENV, PIP_SERVER_VERSION)
            return cls(None)
        return cls.of(text)

    def has(self, feature: Feature) -> bool:
        return self.version is not None and self.version >= feature.since

    def describe(self) -> str:
        if self.version is None:
            return "Triton (version not known): the 2.51 workarounds"
        used = [feature.what for feature in FEATURES if self.has(feature)]
        name = "{}.{}".format(*self.version)
        return f"Triton {name}: " + (", ".join(used) if used else "the 2.51 workarounds")
