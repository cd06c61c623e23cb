"""Triton model `trocr`: the public entry point, callable with a plain unary ModelInfer.

It validates and decodes the images of a request, preprocesses them exactly as the model's image processor
does, and forwards them over BLS to the decoupled `scheduler`, which batches the decoder steps of all
requests together; then it detokenizes. `execute()` starts one task per request and returns at once; each
task answers through its request's response sender. So one instance serves any number of requests
concurrently, Triton's queue in front of it stays short, and a request's deadline counts from its arrival.
A bad image or parameter gets its own INVALID_ARG error.
"""

# First: puts the project environment on the path (see trocr_serving.launcher).
import trocr_triton_site  # noqa: F401

# isort: split

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from trocr_client import protocol
from trocr_serving import scheduler_protocol as sp
from trocr_serving.bls import ModelWatch, error_response, infer_decoupled_async, model_parameters
from trocr_serving.detokenizer import Detokenizer
from trocr_serving.metrics import FrontMetrics, release_families
from trocr_serving.pipeline_config import TOKENIZER_FILE, PipelineConfig
from trocr_serving.refusals import DeadlineExceededError, InvalidRequestError, QueueFullError, Refusal
from trocr_serving.requests import parse_request

LOGGER = logging.getLogger(__name__)
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# Image decoding and preprocessing run beside the event loop (PIL releases the GIL for most of it).
PREPROCESS_THREADS = 2
DRAIN_TIMEOUT_S = 60.0  # the longest default deadline of a request
OPTIONAL_INPUTS = (protocol.INPUT_MAX_NEW_TOKENS, protocol.INPUT_NUM_BEAMS, protocol.INPUT_IGNORE_EOS)


def _input(request, name: str, required: bool = False):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None and required:
        raise InvalidRequestError(f"input '{name}' is missing")
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        model_dir = Path(args["model_repository"]) / args["model_version"]
        self.config = PipelineConfig.load(model_dir)
        self.detokenizer = Detokenizer(model_dir / TOKENIZER_FILE, self.config.clean_up_tokenization_spaces)
        self.scheduler = ModelWatch(sp.MODEL_NAME)
        parameters = model_parameters(json.loads(args["model_config"]))
        self.default_timeout_us = int(parameters["default_timeout_us"])
        self.max_requests_in_flight = int(parameters["max_requests_in_flight"])
        self._executor = ThreadPoolExecutor(PREPROCESS_THREADS, thread_name_prefix="preprocess")
        self._tasks: set[asyncio.Task] = set()
        self._idle = threading.Event()  # set while no request is in flight
        self._idle.set()
        self.metrics = FrontMetrics(protocol.MODEL_NAME)

    def finalize(self):
        # Triton does not count requests answered through response senders as in flight, so it would unload
        # this model under them: finish them first (the launcher unloads this model before stopping the server).
        if not self._idle.wait(timeout=DRAIN_TIMEOUT_S):
            LOGGER.warning("unloading with %d requests still in flight", len(self._tasks))
        self._executor.shutdown(wait=True, cancel_futures=True)
        del self.detokenizer
        del self.metrics
        release_families()

    async def execute(self, requests):
        arrived = time.monotonic()
        loop = asyncio.get_running_loop()
        for request in requests:
            task = loop.create_task(
                self._answer(request, arrived, admitted=len(self._tasks) < self.max_requests_in_flight)
            )
            self._tasks.add(task)
            self._idle.clear()
            task.add_done_callback(self._finished)
        return None

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def _answer(self, request, arrived: float, admitted: bool) -> None:
        sender = request.get_response_sender()
        try:
            if not admitted:
                raise QueueFullError(
                    f"server busy: {self.max_requests_in_flight} requests in flight at this instance; retry later"
                )
            response = await self._transcribe(request, arrived)
        except Exception as exc:
            if not isinstance(exc, Refusal):
                LOGGER.exception("transcription failed")
                exc = Refusal(f"transcription failed: {exc}")
            self.metrics.failed(exc.reason, exc.status)
            response = error_response(exc)
        sender.send(response, flags=FINAL)
        self.metrics.request_duration_seconds.observe(time.monotonic() - arrived)

    def _prepare(self, images, max_new_tokens, num_beams, ignore_eos) -> dict[str, np.ndarray]:
        """In a worker thread: plain arrays only (the request objects stay in the event loop's thread)."""
        job = parse_request(images, max_new_tokens, num_beams, self.config, ignore_eos)
        return sp.request_arrays(job.pixel_values, job.max_new_tokens, job.num_beams, job.ignore_eos)

    async def _transcribe(self, request, arrived: float):
        timeout_us = request.timeout() or self.default_timeout_us
        deadline = arrived + timeout_us / 1e6 if timeout_us else None
        arrays = [
            _input(request, protocol.INPUT_IMAGE, required=True),
            *(_input(request, name) for name in OPTIONAL_INPUTS),
        ]
        inputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._prepare, *arrays)
        remaining_us = 0
        if deadline is not None:
            remaining_us = int((deadline - time.monotonic()) * 1e6)
            if remaining_us <= 0:
                raise DeadlineExceededError("deadline exceeded while decoding the images")
        outputs = await infer_decoupled_async(self.scheduler, inputs, list(sp.OUTPUTS), timeout_us=remaining_us)
        token_ids = outputs[sp.TOKEN_IDS]
        texts = [
            self.detokenizer.decode([int(t) for t in row if t != protocol.TOKEN_IDS_PADDING]).encode()
            for row in token_ids
        ]
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(protocol.OUTPUT_TEXT, np.array(texts, dtype=object)),
                pb_utils.Tensor(protocol.OUTPUT_SCORE, outputs[sp.SCORE]),
                pb_utils.Tensor(protocol.OUTPUT_TOKEN_IDS, token_ids),
            ]
        )
