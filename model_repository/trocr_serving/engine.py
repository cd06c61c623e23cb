"""The decoding engine of the `scheduler` model, importable and testable without Triton.

Assembles a row scheduler, a decoder runner and the asyncio step loop from `EngineOptions` (the model's
config parameters, written by the build from the same dataclass and parsed once here), sizes the rows to
the cache budget, and serves a request: check its bounds, reserve queue room, encode its images (batched
with other requests'), decode them in the running batch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trocr_serving import graph_names as names
from trocr_serving import scheduler_protocol as sp
from trocr_serving.decode_loop import DecodeLoop, Ticket
from trocr_serving.decoder_runner import BoundDecoderRunner
from trocr_serving.encode_feeder import EncodeFeeder
from trocr_serving.execution import CPU, Execution
from trocr_serving.pipeline_config import PipelineConfig
from trocr_serving.row_scheduler import RowScheduler
from trocr_serving.search import SearchResult

LOGGER = logging.getLogger(__name__)

EncodeBatch = Callable[[np.ndarray], Awaitable[np.ndarray]]  # uint8 pixels -> cross-attention keys/values


@dataclass(frozen=True)
class EngineOptions:
    decoder_onnx: str  # relative to the model repository (row_copy.onnx beside it)
    encoder_max_batch_size: int
    max_active_sequences: int  # decoder rows, before the cache budget
    max_queued_sequences: int  # rows that may wait beyond the free ones
    max_request_rows: int  # rows one request holds while others wait
    max_request_row_tokens: int  # sum of num_beams x max_new_tokens of one request
    max_cache_bytes: int
    intra_op_threads: int  # ONNX Runtime's (0: its default)

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
        encode_batch: EncodeBatch,
        metrics=None,
        execution: Execution = CPU,
    ):
        self.pipeline = pipeline
        max_cache_len = pipeline.max_new_tokens_limit + 1
        runner = BoundDecoderRunner.open(
            pipeline.decoder,
            max_cache_len,
            (repository / options.decoder_onnx).parent,
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
        )
        self.loop = DecodeLoop(scheduler, runner, metrics)
        self.encoder = EncodeFeeder(encode_batch, options.encoder_max_batch_size)
        self.limits = sp.RequestLimits(max_rows=max_rows, max_row_tokens=options.max_request_row_tokens)
        LOGGER.info("engine: %d decoder rows on %s, queue bound %d", max_rows, execution.device, scheduler.max_queued)

    def close(self) -> None:
        self.loop.close()

    async def transcribe(self, inputs: dict[str, np.ndarray], ticket: Ticket) -> list[SearchResult]:
        """A request's arrays (scheduler_protocol.INPUTS): checked, encoded, decoded; raises a Refusal."""
        params = sp.search_params(inputs, self.pipeline)
        self.limits.check(params)
        rows = sum(p.num_beams for p in params)
        self.loop.reserve(rows)
        try:
            cross = await self.encoder.encode(inputs[names.PIXELS])
        except BaseException:
            self.loop.release(rows)
            raise
        return await self.loop.generate(cross, params, ticket, reserved_rows=rows)
