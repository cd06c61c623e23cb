"""Triton model `trocr`: the public entry point, callable with a plain unary ModelInfer.

Each instance validates and decodes the images of a request, preprocesses them exactly as the model's
image processor does, and forwards them over BLS to the decoupled `scheduler`, which batches the decoder
steps of all requests together; then it detokenizes. Several instances run side by side (Triton runs one
execute() per instance at a time, even an async one), so concurrent requests meet in the scheduler; more
wait in Triton's bounded queue in front of this model. A bad image gets its own error (outputs `error_code`,
`error`) beside its neighbours' texts; a request whose images are all bad, or with a bad parameter, fails
with INVALID_ARG.

How many requests an instance holds at once depends on the serving release (trocr_serving.server_release):
from 2.71 (CONCURRENT_BLS) up to the build's `requests_per_instance`, each answered through its response
sender from the instance's request loop (triton_adapters.request_loop); before, one (see the WAR below). From
the same release a request whose client went away cancels its call to the scheduler, whose rows then stop.
"""

# First, under the project's pip launcher only: its site module puts the project's environment on the stub's
# path (trocr_serving.launcher.server). A stock Triton (NVIDIA's container) has the packages installed in its Python.
import contextlib

with contextlib.suppress(ModuleNotFoundError):
    import trocr_triton_site  # noqa: F401

# isort: split

import json
import logging
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from trocr_client import protocol
from trocr_serving import scheduler_protocol as sp
from trocr_serving.front.detokenizer import Detokenizer
from trocr_serving.front.requests import parse_request, request_parameters
from trocr_serving.pipeline_config import TOKENIZER_FILE, PipelineConfig
from trocr_serving.refusals import InvalidRequestError, Refusal
from trocr_serving.server_release import ServerRelease
from trocr_serving.stubs import restrict_own_shm_region
from trocr_serving.tensors import output_tensors
from trocr_serving.triton_adapters.bls import ModelCaller, error_response, model_parameters
from trocr_serving.triton_adapters.metrics import FrontMetrics, release_families
from trocr_serving.triton_adapters.request_loop import RequestLoop, requests_per_instance

LOGGER = logging.getLogger(__name__)
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# How long finalize() waits for the requests an instance still holds (servers with CONCURRENT_BLS).
CLOSE_TIMEOUT_S = 30.0


def _input(request, name: str, required: bool = False):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None and required:
        raise InvalidRequestError(f"input '{name}' is missing")
    return None if tensor is None else tensor.as_numpy()


def _raw_parameters(request) -> str | bytes:
    """The request parameters' JSON; its bytes where a value is not UTF-8 (the stub cannot make it a str)."""
    try:
        return request.parameters()
    except UnicodeDecodeError as exc:
        return exc.object


class TritonPythonModel:
    def initialize(self, args):
        restrict_own_shm_region()
        model_dir = Path(args["model_repository"]) / args["model_version"]
        self.config = PipelineConfig.load(model_dir)
        self.detokenizer = Detokenizer(model_dir / TOKENIZER_FILE, self.config.clean_up_tokenization_spaces)
        release = ServerRelease.current()
        self.scheduler = ModelCaller(sp.MODEL_NAME, release)
        self.metrics = FrontMetrics(protocol.MODEL_NAME, args["model_instance_name"])
        self.in_flight = 0
        parameters = model_parameters(json.loads(args["model_config"]))
        self.default_timeout_us = int(parameters["default_timeout_us"])
        limit = requests_per_instance(int(parameters["requests_per_instance"]), release)
        self.request_loop = RequestLoop(limit) if limit > 1 else None
        LOGGER.info("serving under %s, %d request(s) at a time", release.describe(), limit)

    def finalize(self):
        if self.request_loop is not None and not self.request_loop.close(CLOSE_TIMEOUT_S):
            LOGGER.warning("unloading with requests still in flight after %.0f s", CLOSE_TIMEOUT_S)
        del self.detokenizer
        del self.metrics
        release_families()

    def execute(self, requests):
        if self.request_loop is None:
            return self._answer_each(requests)  # a coroutine: the stub runs it to its end
        for request in requests:
            self.request_loop.submit(self._send_answer(request, request.get_response_sender()))
        return None

    async def _answer_each(self, requests):
        return [await self._answer(request) for request in requests]

    async def _send_answer(self, request, sender):
        sender.send(await self._answer(request), flags=FINAL)

    async def _answer(self, request):
        started = time.monotonic()
        self._count_in_flight(1)
        try:
            response = await self._transcribe(request)
        except Exception as exc:
            if not isinstance(exc, Refusal):
                LOGGER.exception("transcription failed")
                exc = Refusal(f"transcription failed: {exc}")
            self.metrics.failed(exc.reason, exc.status)
            response = error_response(exc)
        self.metrics.request_duration_seconds.observe(time.monotonic() - started)
        self._count_in_flight(-1)
        return response

    def _count_in_flight(self, change: int) -> None:
        self.in_flight += change  # on one thread: the stub's, or the request loop's
        self.metrics.in_flight.set(self.in_flight)

    async def _transcribe(self, request):
        job = parse_request(
            _input(request, protocol.INPUT_IMAGE, required=True),
            _input(request, protocol.INPUT_MAX_NEW_TOKENS),
            _input(request, protocol.INPUT_NUM_BEAMS),
            self.config,
            _input(request, protocol.INPUT_IGNORE_EOS),
            request_parameters(_raw_parameters(request)),
        )
        inputs = sp.request_arrays(job.pixels, job.max_new_tokens, job.num_beams, job.ignore_eos)
        # The deadline (the KServe `timeout`, else the server's default) bounded the request's wait in Triton's
        # queue; from here it bounds its work, so that work for a client that left ends.
        timeout_us = request.timeout() or self.default_timeout_us
        outputs = await self.scheduler.infer(inputs, list(sp.OUTPUT_NAMES), timeout_us, request.is_cancelled)
        return self._response(job, outputs[sp.TOKEN_IDS], outputs[sp.SCORE])

    def _response(self, job, token_ids: np.ndarray, scores: np.ndarray):
        """Every input image's row: the good images' results, the bad ones' errors (empty text, no tokens)."""
        rows, good = len(job.errors), job.good_rows
        all_ids = np.full((rows, token_ids.shape[1]), protocol.TOKEN_IDS_PADDING, dtype=token_ids.dtype)
        all_ids[good] = token_ids
        all_scores = np.zeros(rows, dtype=scores.dtype)
        all_scores[good] = scores
        texts = [
            self.detokenizer.decode([int(t) for t in row if t != protocol.TOKEN_IDS_PADDING]).encode()
            for row in all_ids
        ]
        codes = [protocol.ERROR_CODE_OK if e is None else protocol.ERROR_CODE_INVALID_ARGUMENT for e in job.errors]
        self.metrics.images.increment(rows)
        self.metrics.bad_images.increment(rows - len(good))
        values = {
            protocol.OUTPUT_TEXT: texts,
            protocol.OUTPUT_SCORE: all_scores,
            protocol.OUTPUT_TOKEN_IDS: all_ids,
            protocol.OUTPUT_ERROR_CODE: codes,
            protocol.OUTPUT_ERROR: [(e or "").encode() for e in job.errors],
        }
        return pb_utils.InferenceResponse(output_tensors=output_tensors(protocol.OUTPUTS, values, pb_utils.Tensor))
