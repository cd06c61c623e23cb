"""The model runner: runs the encoder for the rows that join, owns the rows' cross-attention keys/values and
self-attention caches, and runs decoder steps.

The row scheduler (trocr_serving.engine.row_scheduler) says what to run; the runner holds the tensors and runs the
graphs with ONNX Runtime's I/O binding, the same code on the CPU and on a CUDA GPU:

- every tensor of the decoding state lives in device memory allocated once at start (OrtValues): the
  cross-attention keys/values of each row, and two self-attention caches used in turn: a step reads the
  previous step's `present_key_values` in one and writes its own into the other (the graph gathers each row's
  cache by `past_rows`, so beam reorders and rows that move cost no copy here);
- a step binds slices of those buffers by address, uploads only the tokens and lengths, and brings back only
  the searches' candidates (rows x top_k values and ids, into host buffers reused from step to step);
- the images of the groups that join are encoded in one call whose output is bound to the encoder's staging
  buffer (trocr_serving.engine.encoder_runner); each group's rows get their image's keys/values from there, and rows
  that move get their source's, through `row_copy.onnx` (an Expand), device to device. What crosses to the
  device per image is its UINT8 pixels; what comes back per step is the candidates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from trocr_serving import graph_names as names
from trocr_serving.engine.decoder_signature import DecoderStep, StepCandidates
from trocr_serving.engine.device_buffer import DeviceBuffer
from trocr_serving.engine.encoder_runner import BoundEncoder
from trocr_serving.engine.row_scheduler import RowLoad, RowMove, StepPlan, StepUpdate
from trocr_serving.execution import Execution
from trocr_serving.onnx_runtime import create_session, float_dtype
from trocr_serving.pipeline_config import DecoderShape


class ModelRunner(Protocol):
    def execute(self, plan: StepPlan) -> StepCandidates:
        """Encode the plan's joining images into their rows (raises EncoderError if that call fails), run one
        step of its rows; returns each row's top_k candidates (valid until the next step) and keeps the step's
        cache until `commit`."""

    def commit(self, update: StepUpdate) -> None:
        """Take the step's cache as the rows' caches, as the scheduler's writes say, then apply its row moves."""

    def move(self, moves: list[RowMove]) -> None:
        """Apply row moves of groups removed between steps."""


class HostOutputs:
    """The step's candidates in host memory: buffers reused from step to step (grown when a step wants more)."""

    def __init__(self, rows: int, top_k: int = 8):
        self.capacity = 0
        self._grow(rows * top_k)

    def _grow(self, elements: int) -> None:
        self.capacity = elements
        self.log_probs = np.empty(elements, dtype=np.float32)
        self.ids = np.empty(elements, dtype=np.int64)

    def bind(self, binding: ort.IOBinding, rows: int, top_k: int) -> StepCandidates:
        if rows * top_k > self.capacity:
            self._grow(2 * rows * top_k)
        shape = [rows, top_k]
        binding.bind_output(names.TOP_LOG_PROBS, "cpu", 0, np.float32, shape, self.log_probs.ctypes.data)
        binding.bind_output(names.TOP_IDS, "cpu", 0, np.int64, shape, self.ids.ctypes.data)
        size = rows * top_k
        return StepCandidates(self.log_probs[:size].reshape(rows, top_k), self.ids[:size].reshape(rows, top_k))


class BoundModelRunner:
    def __init__(
        self,
        shape: DecoderShape,
        max_rows: int,
        max_cache_len: int,
        encoder: BoundEncoder,
        decoder: ort.InferenceSession,
        row_copy: ort.InferenceSession,
        execution: Execution,
    ):
        self.shape = shape
        self.encoder = encoder
        self.max_rows = max_rows
        self.execution = execution
        self.decoder = decoder
        self.row_copy = row_copy
        self.dtype = float_dtype(decoder, names.PAST_KEY_VALUES)  # float16 in the fp16 variant
        if encoder.dtype != self.dtype:
            raise ValueError(f"the encoder writes {encoder.dtype.__name__}, the decoder reads {self.dtype.__name__}")
        # Each layer's cross-attention keys, then values, of every row: one part of max_rows rows after another.
        self.cross_inputs = names.cross_inputs(shape.num_layers)
        self.part_shape = shape.cross_shape(1)[3:]  # [heads, encoder_seq_len, head_dim]
        self.row_elements = int(np.prod(self.part_shape))
        self.part_elements = max_rows * self.row_elements
        self.cross = DeviceBuffer(len(self.cross_inputs) * self.part_elements, self.dtype, execution)
        cache_elements = int(np.prod(shape.cache_shape(max_rows, max_cache_len)))
        self.caches = tuple(DeviceBuffer(cache_elements, self.dtype, execution) for _ in range(2))
        # Before the first step: a cache of one row and no positions (every row starts at length 0).
        empty = np.zeros(shape.cache_shape(1, 0), dtype=self.dtype)
        self.no_cache = ort.OrtValue.ortvalue_from_numpy(empty, *execution.ort_device)
        self.current = -1  # which of self.caches holds the rows' caches (-1: none yet)
        self.current_shape = shape.cache_shape(1, 0)
        self.next_shape = self.current_shape
        self.past_rows = np.zeros(max_rows, dtype=np.int64)  # the row of the current cache each row continues
        self.host = HostOutputs(max_rows)
        self.binding = decoder.io_binding()

    @classmethod
    def open(
        cls,
        shape: DecoderShape,
        max_cache_len: int,
        folder: Path,
        encoder: BoundEncoder,
        execution: Execution,
        threads: int = 0,
        max_rows: int = 64,
        max_cache_bytes: int | None = None,
    ) -> BoundModelRunner:
        """The runner of `encoder` and a repository's decoder.onnx and row_copy.onnx (in `folder`), on
        `execution`'s device, with `max_rows` rows, fewer if their buffers would take more than
        `max_cache_bytes`."""
        decoder = create_session(folder / names.DECODER_ONNX, threads, spinning=False, execution=execution)
        row_copy = create_session(folder / names.ROW_COPY_ONNX, 1, spinning=False, execution=execution)
        if max_cache_bytes is not None:
            itemsize = np.dtype(float_dtype(decoder, names.PAST_KEY_VALUES)).itemsize
            max_rows = max(1, min(max_rows, max_cache_bytes // shape.row_bytes(max_cache_len, itemsize)))
        return cls(shape, max_rows, max_cache_len, encoder, decoder, row_copy, execution)

    def execute(self, plan: StepPlan) -> StepCandidates:
        if plan.loads:
            self._load(plan.loads)
        rows, longest = plan.rows, int(plan.lengths.max())
        step = DecoderStep.of(plan.last_tokens, plan.lengths, None, None, plan.top_k, self.past_rows[:rows])
        binding = self.binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, array in step.host_inputs().items():
            binding.bind_cpu_input(name, array)
        if self.current < 0:
            binding.bind_ortvalue_input(names.PAST_KEY_VALUES, self.no_cache)
        else:
            self.caches[self.current].bind_input(binding, names.PAST_KEY_VALUES, self.current_shape)
        for part, name in enumerate(self.cross_inputs):
            self.cross.bind_input(binding, name, (rows, *self.part_shape), part * self.part_elements)
        self.next_shape = self.shape.cache_shape(rows, longest + 1)
        self.caches[self._next].bind_output(binding, names.PRESENT_KEY_VALUES, self.next_shape)
        candidates = self.host.bind(binding, rows, min(plan.top_k, self.shape.vocab_size))
        self.decoder.run_with_iobinding(binding)
        return candidates

    @property
    def _next(self) -> int:
        return 1 if self.current == 0 else 0

    def commit(self, update: StepUpdate) -> None:
        self.current, self.current_shape = self._next, self.next_shape
        self.past_rows[: self.current_shape[0]] = np.arange(self.current_shape[0])
        for write in update.writes:  # beam search: a row continues its parent's cache
            self.past_rows[write.rows] = write.rows[write.parents]
        self.move(update.moves)

    def move(self, moves: list[RowMove]) -> None:
        for move in moves:
            self.past_rows[move.target] = self.past_rows[move.source]
            self._copy_cross(move.source, move.target)

    def _load(self, loads: list[RowLoad]) -> None:
        """The joining groups' images, encoded in one call into the staging buffer, then each image's
        keys/values copied into every row of its group (consecutive rows). Their caches are empty (length 0),
        so the row of the current cache they point to does not matter."""
        staged = self.encoder.encode(np.stack([load.pixels for load in loads]))
        parts = len(self.cross_inputs)
        for image, load in enumerate(loads):
            self.past_rows[load.rows] = 0
            for part in range(parts):
                self._copy(staged, (image * parts + part) * self.row_elements, part, load.rows[0], len(load.rows))

    def _copy_cross(self, source: int, target: int) -> None:
        for part in range(len(self.cross_inputs)):
            self._copy(self.cross, part * self.part_elements + source * self.row_elements, part, target, 1)

    def _copy(self, source: DeviceBuffer, offset: int, part: int, first_row: int, rows: int) -> None:
        """One part ([heads, encoder_seq_len, head_dim]) at element `offset` of `source` into `rows` rows of that
        part of the rows' buffer, from `first_row` on (device to device)."""
        binding = self.row_copy.io_binding()
        source.bind_input(binding, names.ROW_COPY_SOURCE, (1, *self.part_shape), offset)
        shape = (rows, *self.part_shape)
        binding.bind_cpu_input(names.ROW_COPY_SHAPE, np.array(shape, dtype=np.int64))
        self.cross.bind_output(
            binding, names.ROW_COPY_TARGET, shape, part * self.part_elements + first_row * self.row_elements
        )
        self.row_copy.run_with_iobinding(binding)
