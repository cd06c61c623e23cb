"""Calls from one Triton Python model to another (Business Logic Scripting). Runs inside the server only.

Both sides choose their mechanisms by the serving release (trocr_serving.server_release), read once as a model
loads: how a refusal keeps its status, how a caller learns that the called model is not running, and whether a
caller whose own client went away cancels its call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils

from trocr_serving.refusals import KINDS, ModelUnavailableError, Refusal, refusal
from trocr_serving.server_release import BLS_CANCEL, BLS_ERROR_CODES, CONCURRENT_BLS, STUB_READINESS, ServerRelease
from trocr_serving.stubs import StubProcess, model_stubs
from trocr_serving.triton_adapters.bls_status import STATUS_CODE, STATUS_MESSAGE, STATUS_OUTPUTS, STATUS_REASON

# How often a caller whose call is in flight looks whether its own client cancelled (servers with BLS_CANCEL).
CANCEL_POLL_S = 0.1
# A refusal passed back as a Triton error carries its reason (the metrics' label) ahead of its message.
_REASON_SEPARATOR = ": "
_CODE_NAMES = ("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS")


def error_response(refused: Refusal) -> pb_utils.InferenceResponse:
    """A per-request error with a real status (INVALID_ARG, INTERNAL, UNAVAILABLE, ...)."""
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(str(refused), getattr(pb_utils.TritonError, refused.status))
    )


def refused_response(refused: Refusal, release: ServerRelease) -> pb_utils.InferenceResponse:
    """How a model called over BLS refuses a request so that its caller sees the status and the reason."""
    if release.has(BLS_ERROR_CODES):
        tagged = type(refused)(f"{refused.reason}{_REASON_SEPARATOR}{refused}", refused.status)
        return error_response(tagged)
    return status_response(refused)


# WAR(2.51): error responses lose their status code on the way back through BLS (the caller sees INTERNAL), so
# a called model answers with these outputs instead. Fixed in: 2.57 (25.04), python_backend PR #398
# (server_release.BLS_ERROR_CODES): refused_response() chooses.
def status_response(refused: Refusal) -> pb_utils.InferenceResponse:
    values = {STATUS_CODE: refused.status, STATUS_MESSAGE: str(refused), STATUS_REASON: refused.reason}
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor(name, np.array([value.encode()], dtype=object)) for name, value in values.items()
        ]
    )


def _error_refusal(model_name: str, error) -> Refusal:
    """The refusal a called model sent as a Triton error (servers with BLS_ERROR_CODES); an error without a
    reason came from Triton itself: the model was not there to serve (unloaded, reloading, its stub dead)."""
    code = error.code()
    status = next((name for name in _CODE_NAMES if getattr(pb_utils.TritonError, name, None) == code), "INTERNAL")
    reason, _, message = error.message().partition(_REASON_SEPARATOR)
    if reason not in {kind.reason for kind in KINDS}:
        return ModelUnavailableError(f"{model_name} unavailable: {error.message()}; retry")
    return refusal(reason, message, status)


def acknowledges_calls(release: ServerRelease) -> bool:
    """Whether a called model answers a call at once with an empty response, so that its caller holds the
    response iterator (and can cancel the call) while the work runs: async_exec returns the iterator only with
    the first response. Cancelling means waking the caller's event loop while its call is in flight, which
    corrupted the stub's heap before CONCURRENT_BLS (see ModelCaller)."""
    return release.has(BLS_CANCEL) and release.has(CONCURRENT_BLS)


class ModelCaller:
    """Calls to one decoupled model that answers each request with one response carrying its outputs.

    A call to a model that is not running fails at once (ModelUnavailableError). A call already waiting on a
    stub that dies is ended by the launcher's watchdog, which restarts the server. Calls are awaited with
    async_exec, never the blocking `exec(decoupled=True)`: blocking the stub's main thread in that call made
    Triton 2.51 report the stub "not healthy" for about 1% of requests at 4 concurrent clients (15% with 4
    instances), and it was 9x slower; with async_exec, 0 errors in 5739 requests. Before CONCURRENT_BLS the
    caller does not poll while it waits: measured on 2.51, waking the stub's event loop during a BLS call
    corrupted the stub's heap ("malloc(): unaligned fastbin chunk detected") in 2 of 4 soaks of 1500 mixed
    requests (python_backend PR #439 fixed a use-after-free in async_exec's callback); awaited directly, 0 in 4.
    """

    def __init__(self, model_name: str, release: ServerRelease):
        self.model_name = model_name
        self.release = release
        self._stubs: list[StubProcess] = []

    def check_running(self) -> None:
        if self.release.has(STUB_READINESS):
            if not pb_utils.is_model_ready(self.model_name):
                raise ModelUnavailableError(f"{self.model_name} is not ready (being restarted?); retry")
            return
        # WAR(2.51): a model whose stub died stays ready (stubs.py), so the caller looks at the stubs.
        # Fixed in: 2.65 (26.01), python_backend PR #423 and core PR #461 (server_release.STUB_READINESS).
        if not self._stubs or not all(stub.is_alive() for stub in self._stubs):
            self._stubs = model_stubs(self.model_name)
        if not self._stubs:
            raise ModelUnavailableError(f"{self.model_name} is not running (being restarted?); retry")

    async def infer(
        self,
        inputs: dict[str, np.ndarray],
        output_names: list[str],
        timeout_us: int = 0,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> dict[str, np.ndarray]:
        """The called model's outputs, or its refusal raised. `is_cancelled` (the caller's own request's): on
        servers where acknowledges_calls(), the call is cancelled when it turns true, and its work stops."""
        self.check_running()
        status_outputs = () if self.release.has(BLS_ERROR_CODES) else STATUS_OUTPUTS
        request = pb_utils.InferenceRequest(
            model_name=self.model_name,
            inputs=[pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in inputs.items()],
            requested_output_names=[*output_names, *status_outputs],
            timeout=timeout_us,
        )
        responses = await request.async_exec(decoupled=True)
        if is_cancelled is not None and acknowledges_calls(self.release):
            responses = await _responses_cancelling(responses, is_cancelled)
        outputs = None
        for response in responses:
            if response.has_error() or response.output_tensors():
                outputs = self._outputs(response, output_names)
        if outputs is None:
            raise ModelUnavailableError(f"{self.model_name} ended the request without an answer (unloading?); retry")
        return outputs

    def _outputs(self, response, output_names: list[str]) -> dict[str, np.ndarray]:
        if response.has_error():
            if self.release.has(BLS_ERROR_CODES):
                raise _error_refusal(self.model_name, response.error())
            # The called model answers with status outputs: an error came from Triton itself.
            raise ModelUnavailableError(f"{self.model_name} unavailable: {response.error().message()}; retry")
        if pb_utils.get_output_tensor_by_name(response, STATUS_CODE) is not None:
            code, message, reason = (
                pb_utils.get_output_tensor_by_name(response, name).as_numpy().reshape(-1)[0].decode()
                for name in STATUS_OUTPUTS
            )
            raise refusal(reason, message, code)
        return {name: output_array(response, name) for name in output_names}


async def _responses_cancelling(iterator, is_cancelled: Callable[[], bool]) -> list:
    """Every response of a decoupled call, read off the event loop; the call is cancelled (once) as soon as
    is_cancelled() turns true, and the responses up to its end are still read."""
    loop = asyncio.get_running_loop()
    responses, cancelled = [], False
    while True:
        pending = loop.run_in_executor(None, next, iterator, None)
        while not pending.done():
            await asyncio.wait({pending}, timeout=CANCEL_POLL_S)
            if not cancelled and not pending.done() and is_cancelled():
                iterator.cancel()
                cancelled = True
        response = pending.result()
        if response is None:
            return responses
        responses.append(response)


def output_array(response, name: str) -> np.ndarray:
    """A copy: as_numpy() views the response's shared memory, which goes when the response object does."""
    return pb_utils.get_output_tensor_by_name(response, name).as_numpy().copy()


def model_parameters(model_config: dict) -> dict[str, str]:
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}
