"""Triton model `scheduler`: continuous batching of decoder steps across all requests (decoupled, async).

One instance holds every in-flight sequence. A request (resized images as uint8 and per-image decoding
parameters, sent by the `trocr` front instances over BLS) is encoded by `encoder` (Triton batches those
calls), then its images join the running batch at the next step; each request is answered as soon as its
own images finish. The decoder runs in this process on its own graph, so the caches never leave it. This
file adapts Triton to the engine (trocr_serving.engine): requests in, responses and metrics out.
"""

# First, under the project's pip launcher only: its site module puts the project's environment on the stub's
# path (trocr_serving.launcher). A stock Triton (NVIDIA's container) has the packages installed in its Python.
import contextlib

with contextlib.suppress(ModuleNotFoundError):
    import trocr_triton_site  # noqa: F401

# isort: split

import asyncio
import json
import logging
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from trocr_serving import graph_names as names
from trocr_serving import scheduler_protocol as sp
from trocr_serving.bls import ModelWatch, check_response, model_parameters, output_array, status_response
from trocr_serving.decode_loop import Ticket
from trocr_serving.engine import Engine, EngineOptions
from trocr_serving.execution import Execution
from trocr_serving.metrics import SchedulerMetrics, release_families
from trocr_serving.pipeline_config import PipelineConfig
from trocr_serving.refusals import Refusal
from trocr_serving.stubs import restrict_own_shm_region

LOGGER = logging.getLogger(__name__)
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonMetrics:
    def __init__(self, model_name: str):
        self.m = SchedulerMetrics(model_name)

    def step(self, rows):
        self.m.decoder_batch_size.observe(rows)

    def admitted(self, wait_s):
        self.m.queue_wait_seconds.observe(wait_s)

    def tokens(self, count):
        self.m.tokens_generated.increment(count)

    def occupancy(self, active_rows, queued_rows):
        self.m.active_sequences.set(active_rows)
        self.m.queued_sequences.set(queued_rows)


class TritonPythonModel:
    def initialize(self, args):
        restrict_own_shm_region()
        config = json.loads(args["model_config"])
        model_dir = Path(args["model_repository"])
        self.metrics = TritonMetrics(config["name"])
        parameters = model_parameters(config)
        # A Python-backend encoder is watched (a BLS call to a dead stub never returns); a native one has no stub,
        # and its outputs are asked for in CPU memory (on a GPU they would stay there, and as_numpy() reads host
        # memory only).
        native_encoder = parameters.get(sp.ENCODER_BACKEND, "python") != "python"
        self.encoder_watch = None if native_encoder else ModelWatch("encoder")
        self.encoder_memory = (
            {"preferred_memory": pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)}
            if native_encoder
            else {}
        )
        self.options = EngineOptions.from_parameters(parameters)
        self.engine = Engine(
            self.options,
            PipelineConfig.load(model_dir / args["model_version"]),
            model_dir.parent,
            self._encode_batch,
            self.metrics,
            Execution.of_instance(args),
        )

    def finalize(self):
        self.engine.close()
        self.engine.loop.metrics = None
        del self.metrics
        release_families()

    async def execute(self, requests):
        await asyncio.gather(*(self._serve(request) for request in requests))
        return None

    async def _serve(self, request):
        sender = request.get_response_sender()
        try:
            inputs = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in sp.INPUTS}
            timeout_us = request.timeout()
            ticket = Ticket(
                is_cancelled=request.is_cancelled,
                deadline=time.monotonic() + timeout_us / 1e6 if timeout_us else None,
            )
            results = await self.engine.transcribe(inputs, ticket)
            response = pb_utils.InferenceResponse(output_tensors=sp.result_tensors(results, pb_utils.Tensor))
        except Refusal as exc:
            self.metrics.m.rejected[exc.reason].increment(1)
            response = status_response(exc)
        except Exception as exc:
            LOGGER.exception("scheduler failed")
            response = status_response(Refusal(f"scheduler failed: {exc}"))
        sender.send(response, flags=FINAL)

    async def _encode_batch(self, pixels):
        """One or more `encoder` calls (a request may carry more images than its max batch size)."""
        size = self.options.encoder_max_batch_size
        requests = [
            pb_utils.InferenceRequest(
                model_name="encoder",
                inputs=[pb_utils.Tensor(names.PIXELS, np.ascontiguousarray(pixels[i : i + size]))],
                requested_output_names=[names.CROSS_KEY_VALUES],
                **self.encoder_memory,
            )
            for i in range(0, len(pixels), size)
        ]
        chunks = []

        def calls():
            return asyncio.gather(*(r.async_exec() for r in requests))

        responses = await (calls() if self.encoder_watch is None else self.encoder_watch.call(calls))
        for response in responses:
            check_response("encoder", response)
            chunks.append(output_array(response, names.CROSS_KEY_VALUES))
        return np.concatenate(chunks)
