"""The engine of the `scheduler` model: encoder and decoder in one process, importable and testable without Triton.

Assembles a row scheduler, a model runner (the encoder and decoder sessions and their device buffers) and the
asyncio step loop from `EngineOptions` (the model's config parameters, written by the build from the same
dataclass and parsed once here), sizes the rows to the cache budget, and serves a request: check its bounds,
queue its images (as UINT8 pixels), which are encoded when rows free up for them, in one encoder call with the
other images joining at that step, and decoded in the running batch.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trocr_serving import graph_names as names
from trocr_serving import scheduler_protocol as sp
from trocr_serving.engine.decode_loop import DecodeLoop, Ticket
from trocr_serving.engine.encoder_runner import TENSORRT_OFF, TENSORRT_PRECISIONS, BoundEncoder
from trocr_serving.engine.model_runner import BoundModelRunner
from trocr_serving.engine.row_scheduler import RowScheduler
from trocr_serving.engine.search import SearchResult
from trocr_serving.execution import CPU, Execution
from trocr_serving.pipeline_config import PipelineConfig

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    graphs: str  # the folder of encoder.onnx, decoder.onnx and row_copy.onnx, relative to the model repository
    encoder_max_batch_size: int  # images per encoder call: the most that join the running batch in one step
    max_active_sequences: int  # decoder rows, before the cache budget
    max_queued_sequences: int  # rows that may wait beyond the free ones
    max_request_rows: int  # rows one request holds while others wait
    max_request_row_tokens: int  # sum of num_beams x max_new_tokens of one request
    max_cache_bytes: int
    intra_op_threads: int  # ONNX Runtime's (0: its default)
    encoder_tensorrt: str  # "off", or the precision of the encoder under TensorRT (CUDA only): "fp32", "fp16"

    def __post_init__(self):
        if self.encoder_tensorrt not in (TENSORRT_OFF, *TENSORRT_PRECISIONS):
            allowed = ", ".join((TENSORRT_OFF, *TENSORRT_PRECISIONS))
            raise ValueError(f"encoder_tensorrt {self.encoder_tensorrt!r} is not one of {allowed}")

    def to_parameters(self) -> dict[str, str]:
        return {field.name: str(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> EngineOptions:
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in parameters:
                raise ValueError(f"scheduler config: parameter {field.name!r} is missing; rebuild the repository")
            raw = parameters[field.name]
            try:
                values[field.name] = int(raw) if field.type == "int" else raw
            except ValueError:
                raise ValueError(f"scheduler config: parameter {field.name}={raw!r} is not an integer") from None
        return cls(**values)


class Engine:
    def __init__(
        self,
        options: EngineOptions,
        pipeline: PipelineConfig,
        repository: Path,
        metrics=None,
        execution: Execution = CPU,
    ):
        self.pipeline = pipeline
        max_cache_len = pipeline.max_new_tokens_limit + 1
        graphs = repository / options.graphs
        encoder = BoundEncoder.open(
            graphs / names.ENCODER_ONNX,
            pipeline,
            options.encoder_max_batch_size,
            execution,
            options.intra_op_threads,
            options.encoder_tensorrt,
        )
        runner = BoundModelRunner.open(
            pipeline.decoder,
            max_cache_len,
            graphs,
            encoder,
            execution,
            options.intra_op_threads,
            max_rows=options.max_active_sequences,
            max_cache_bytes=options.max_cache_bytes,
        )
        max_rows = runner.max_rows
        scheduler = RowScheduler(
            max_rows=max_rows,
            max_cache_len=max_cache_len,
            max_queued=options.max_queued_sequences,
            start_token=pipeline.generation.decoder_start_token_id,
            max_request_rows=options.max_request_rows,
            max_encoder_batch=options.encoder_max_batch_size,
        )
        self.loop = DecodeLoop(scheduler, runner, metrics)
        self.limits = sp.RequestLimits(max_rows=max_rows, max_row_tokens=options.max_request_row_tokens)
        LOGGER.info("engine: %d decoder rows on %s, queue bound %d", max_rows, execution.device, scheduler.max_queued)

    def close(self) -> None:
        self.loop.close()

    async def transcribe(self, inputs: dict[str, np.ndarray], ticket: Ticket) -> list[SearchResult]:
        """A request's arrays (scheduler_protocol.INPUTS): checked, queued, encoded and decoded; raises a
        Refusal."""
        params = sp.search_params(inputs, self.pipeline)
        self.limits.check(params)
        return await self.loop.generate(inputs[names.PIXELS], params, ticket)
