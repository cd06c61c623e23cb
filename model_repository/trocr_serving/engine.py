"""The engine of the `scheduler` model: encoder and decoder in one process, importable and testable without Triton.

Assembles a row scheduler, a decoder runner, the encoder's session and the asyncio step loop from
`EngineOptions` (the model's config parameters, written by the build from the same dataclass and parsed once
here), sizes the rows to the cache budget, and serves a request: check its bounds, reserve queue room, encode
its images (batched with other requests' by the EncodeFeeder), decode them in the running batch.

Encoder calls and decoder steps run one at a time in the step loop's one worker thread: on a CPU the two
graphs then never compete for the cores with two thread pools (before, the encoder ran in a process of its
own, and both pools fought over the same cores). A step waits for an encoder call in progress and the reverse.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trocr_serving import graph_names as names
from trocr_serving import scheduler_protocol as sp
from trocr_serving.decode_loop import DecodeLoop, Ticket
from trocr_serving.decoder_runner import BoundDecoderRunner
from trocr_serving.encode_feeder import EncodeFeeder
from trocr_serving.execution import CPU, Execution
from trocr_serving.onnx_runtime import GraphRunner
from trocr_serving.pipeline_config import PipelineConfig
from trocr_serving.row_scheduler import RowScheduler
from trocr_serving.search import SearchResult

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    encoder_onnx: str  # relative to the model repository
    decoder_onnx: str  # relative to the model repository (row_copy.onnx beside it)
    encoder_max_batch_size: int  # images per encoder call
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
        metrics=None,
        execution: Execution = CPU,
    ):
        self.pipeline = pipeline
        self.encoder_max_batch_size = options.encoder_max_batch_size
        # Not spinning: the front instances' processes share the cores, and an idle spinning pool steals them.
        self.encoder = GraphRunner(repository / options.encoder_onnx, options.intra_op_threads, False, execution)
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
        self.feeder = EncodeFeeder(self._encode_batch, options.encoder_max_batch_size)
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
            cross = await self.feeder.encode(inputs[names.PIXELS])
        except BaseException:
            self.loop.release(rows)
            raise
        return await self.loop.generate(cross, params, ticket, reserved_rows=rows)

    async def _encode_batch(self, pixels: np.ndarray) -> np.ndarray:
        """UINT8 pixels -> their cross-attention keys/values, in calls of at most encoder_max_batch_size images
        (a request may carry more), in the step loop's worker thread."""
        size = self.encoder_max_batch_size
        outputs = []
        for start in range(0, len(pixels), size):
            chunk = pixels[start : start + size]
            outputs.append(await self.loop.in_worker(self._encode_chunk, chunk))
            self.loop.metrics.encoded(len(chunk))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _encode_chunk(self, pixels: np.ndarray) -> np.ndarray:
        return self.encoder.run({names.PIXELS: pixels}, [names.CROSS_KEY_VALUES])[names.CROSS_KEY_VALUES]
