"""Triton model `scheduler`: continuous batching of decoder steps across all requests (decoupled, async).

One instance holds every in-flight sequence. A request (resized images as uint8 and per-image decoding
parameters, sent by the `trocr` front instances over BLS) is encoded by the engine's own encoder session,
then its images join the running batch at the next step; each request is answered as soon as its own images
finish. Encoder and decoder run in this process on their own graphs, so the cross-attention keys/values and
the caches never leave it. This file adapts Triton to the engine (trocr_serving.engine.core): requests in,
responses and metrics out.
"""

# First, under the project's pip launcher only: its site module puts the project's environment on the stub's
# path (trocr_serving.launcher.server). A stock Triton (NVIDIA's container) has the packages installed in its Python.
import contextlib

with contextlib.suppress(ModuleNotFoundError):
    import trocr_triton_site  # noqa: F401

# isort: split

import asyncio
import json
import logging
import time
from pathlib import Path

import triton_python_backend_utils as pb_utils

from trocr_serving import scheduler_protocol as sp
from trocr_serving.engine.core import Engine, EngineOptions
from trocr_serving.engine.decode_loop import Ticket
from trocr_serving.execution import Execution
from trocr_serving.pipeline_config import PipelineConfig
from trocr_serving.refusals import Refusal
from trocr_serving.server_release import ServerRelease
from trocr_serving.stubs import restrict_own_shm_region
from trocr_serving.triton_adapters.bls import acknowledges_calls, model_parameters, refused_response
from trocr_serving.triton_adapters.metrics import BatchSizeMetric, SchedulerMetrics, release_families

LOGGER = logging.getLogger(__name__)
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonMetrics:
    def __init__(self, model_name: str):
        self.m = SchedulerMetrics(model_name)
        self.encoder_batch_size = BatchSizeMetric("encoder")

    def step(self, rows):
        self.m.decoder_batch_size.observe(rows)

    def encoded(self, images):
        self.encoder_batch_size.observe(images)

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
        self.release = ServerRelease.current()
        LOGGER.info("serving under %s", self.release.describe())
        self.acknowledges = acknowledges_calls(self.release)
        self.engine = Engine(
            EngineOptions.from_parameters(model_parameters(config)),
            PipelineConfig.load(model_dir / args["model_version"]),
            model_dir.parent,
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
        if self.acknowledges:  # the caller now holds the call's response iterator: it can cancel the call
            sender.send(pb_utils.InferenceResponse(output_tensors=[]))
        try:
            inputs = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in sp.INPUT_NAMES}
            timeout_us = request.timeout()
            ticket = Ticket(
                is_cancelled=request.is_cancelled,
                deadline=time.monotonic() + timeout_us / 1e6 if timeout_us else None,
            )
            results = await self.engine.transcribe(inputs, ticket)
            response = pb_utils.InferenceResponse(output_tensors=sp.result_tensors(results, pb_utils.Tensor))
        except Refusal as exc:
            self.metrics.m.rejected[exc.reason].increment(1)
            response = refused_response(exc, self.release)
        except Exception as exc:
            LOGGER.exception("scheduler failed")
            response = refused_response(Refusal(f"scheduler failed: {exc}"), self.release)
        sender.send(response, flags=FINAL)
