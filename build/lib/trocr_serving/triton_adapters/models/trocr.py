"""Triton model `trocr`: the public entry point, callable with a plain unary ModelInfer.

Each instance validates and decodes the images of a request, preprocesses them exactly as the model's
image processor does, and forwards them over BLS to the decoupled `scheduler`, which batches the decoder
steps of all requests together; then it detokenizes. Several instances run side by side (Triton runs one
execute() per instance at a time, even an async one), so concurrent requests meet in the scheduler; more
wait in Triton's bounded queue in front of this model. A bad image gets its own error (outputs `error_code`,
`error`) beside its neighbours' texts; a request whose images are all bad, or with a bad parameter, fails
with INVALID_ARG.

One request at a time per instance, on purpose (measured on Triton 2.51): an instance that answered through
response senders and kept many requests in flight made many BLS calls at once from one stub, and the stub,
then tritonserver itself, crashed (SIGSEGV) under load.
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
from trocr_serving.stubs import restrict_own_shm_region
from trocr_serving.tensors import output_tensors
from trocr_serving.triton_adapters.bls import ModelWatch, error_response, infer_decoupled_async, model_parameters
from trocr_serving.triton_adapters.metrics import FrontMetrics, release_families

LOGGER = logging.getLogger(__name__)


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


# WAR(2.51): one request at a time per instance (module docstring): many BLS calls in flight from one stub
# crashed it, then tritonserver. Fixed in: possibly python_backend PR #439 (26.07: a use-after-free in
# async_exec), unverified; until a newer server is checked, every server gets one request per instance.
class TritonPythonModel:
    def initialize(self, args):
        restrict_own_shm_region()
        model_dir = Path(args["model_repository"]) / args["model_version"]
        self.config = PipelineConfig.load(model_dir)
        self.detokenizer = Detokenizer(model_dir / TOKENIZER_FILE, self.config.clean_up_tokenization_spaces)
        self.scheduler = ModelWatch(sp.MODEL_NAME)
        self.metrics = FrontMetrics(protocol.MODEL_NAME, args["model_instance_name"])
        parameters = model_parameters(json.loads(args["model_config"]))
        self.default_timeout_us = int(parameters["default_timeout_us"])

    def finalize(self):
        del self.detokenizer
        del self.metrics
        release_families()

    async def execute(self, requests):
        return [await self._answer(request) for request in requests]

    async def _answer(self, request):
        started = time.monotonic()
        self.metrics.in_flight.set(1)
        try:
            response = await self._transcribe(request)
        except Exception as exc:
            if not isinstance(exc, Refusal):
                LOGGER.exception("transcription failed")
                exc = Refusal(f"transcription failed: {exc}")
            self.metrics.failed(exc.reason, exc.status)
            response = error_response(exc)
        self.metrics.request_duration_seconds.observe(time.monotonic() - started)
        self.metrics.in_flight.set(0)
        return response

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
        outputs = await infer_decoupled_async(self.scheduler, inputs, list(sp.OUTPUT_NAMES), timeout_us=timeout_us)
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
