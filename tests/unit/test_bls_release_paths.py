"""The BLS paths of the newer servers (2.57+), which no server here runs: their logic checked against a stand-in
for the stub's `triton_python_backend_utils` that has only what these functions touch (the 2.51 paths run
live in the integration tests). What the real python_backend does is read from its source (server_release)."""

from __future__ import annotations

import asyncio
import sys
import threading
import types

import pytest

from trocr_serving.refusals import DeadlineExceededError, ModelUnavailableError, QueueFullError
from trocr_serving.server_release import PIP_SERVER_VERSION, ServerRelease


class _TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message, code=1):
        self._message, self._code = message, code

    def message(self):
        return self._message

    def code(self):
        return self._code


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self.outputs, self._error = output_tensors or [], error

    def error(self):
        return self._error


@pytest.fixture
def bls(monkeypatch):
    fake = types.ModuleType("triton_python_backend_utils")
    fake.TritonError, fake.InferenceResponse = _TritonError, _Response
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    monkeypatch.delitem(sys.modules, "trocr_serving.triton_adapters.bls", raising=False)
    import trocr_serving.triton_adapters.bls as module

    yield module
    sys.modules.pop("trocr_serving.triton_adapters.bls", None)


@pytest.mark.parametrize("refused", [QueueFullError("server busy: 64 rows queued"), DeadlineExceededError("late")])
def test_a_refusal_crosses_bls_as_a_triton_error_with_its_kind_status_and_message(bls, refused):
    response = bls.refused_response(refused, ServerRelease.of("2.57.0"))
    received = bls._error_refusal("scheduler", response.error())
    assert type(received) is type(refused)
    assert (received.status, received.reason, str(received)) == (refused.status, refused.reason, str(refused))


def test_an_error_from_triton_itself_means_the_model_was_not_there(bls):
    received = bls._error_refusal("scheduler", _TritonError("Server not ready", _TritonError.UNAVAILABLE))
    assert isinstance(received, ModelUnavailableError) and "retry" in str(received)


def test_the_pip_server_keeps_the_status_outputs(bls, monkeypatch):
    monkeypatch.setattr(bls, "status_response", lambda refused: ("status outputs", refused.reason))
    assert bls.refused_response(QueueFullError("busy"), ServerRelease.of(PIP_SERVER_VERSION)) == (
        "status outputs",
        "queue_full",
    )
    assert not bls.acknowledges_calls(ServerRelease.of(PIP_SERVER_VERSION))
    assert bls.acknowledges_calls(ServerRelease.of("2.71.0"))


def test_a_call_is_cancelled_once_when_the_callers_client_leaves_and_read_to_its_end(bls, monkeypatch):
    monkeypatch.setattr(bls, "CANCEL_POLL_S", 0.01)
    cancelled, final_sent = threading.Event(), threading.Event()

    class Iterator:  # the scheduler's acknowledgement came with async_exec; its answer follows the cancel
        def __init__(self):
            self.responses, self.cancels = ["ack", "cancelled"], 0

        def __next__(self):
            if len(self.responses) == 1:
                final_sent.wait(5)
            if not self.responses:
                raise StopIteration
            return self.responses.pop(0)

        def cancel(self):
            self.cancels += 1
            cancelled.set()
            final_sent.set()

    iterator, client_gone = Iterator(), threading.Event()
    threading.Timer(0.05, client_gone.set).start()
    responses = asyncio.run(bls._responses_cancelling(iterator, client_gone.is_set))
    assert responses == ["ack", "cancelled"] and iterator.cancels == 1
