"""Decoder runners: own the rows' cross-attention keys/values and self-attention caches, and run steps.

The row scheduler (trocr_serving.row_scheduler) says what to run; a runner holds the tensors and runs the
graph. `NumpyDecoderRunner` keeps the pools in host memory for ONNX Runtime's CPU execution provider; a
device runner keeps them in device memory behind the same protocol, and the scheduler does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from trocr_serving import graph_names as names
from trocr_serving.decoder_signature import DecoderStep, StepCandidates
from trocr_serving.pipeline_config import DecoderShape
from trocr_serving.row_scheduler import RowMove, StepPlan, StepUpdate

# (the graph's inputs by name, the outputs wanted) -> those outputs by name
GraphRun = Callable[[dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]


class DecoderRunner(Protocol):
    def execute(self, plan: StepPlan) -> StepCandidates:
        """Load the plan's new rows, run one step of its rows; returns each row's top_k candidates and keeps the
        step's keys/values until `commit`."""

    def commit(self, update: StepUpdate) -> None:
        """Write the step's keys/values where the scheduler says, then apply its row moves."""

    def move(self, moves: list[RowMove]) -> None:
        """Apply row moves of groups removed between steps."""


class NumpyDecoderRunner:
    """Pools in host memory, allocated once (np.zeros maps pages lazily: memory is used as rows are)."""

    def __init__(self, shape: DecoderShape, max_rows: int, max_cache_len: int, run_graph: GraphRun):
        self.run_graph = run_graph
        self.vocab_size = shape.vocab_size
        self.cross = np.zeros(shape.cross_shape(max_rows), dtype=np.float32)
        self.past = np.zeros(shape.cache_shape(max_rows, max_cache_len), dtype=np.float32)
        self._new_key_values: np.ndarray | None = None

    def execute(self, plan: StepPlan) -> StepCandidates:
        for load in plan.loads:
            self.cross[load.rows] = load.cross_key_values
        rows, longest = plan.rows, int(plan.lengths.max())
        step = DecoderStep.of(
            plan.last_tokens,
            plan.lengths,
            np.ascontiguousarray(self.past[:rows, :, :, :, :longest]),
            self.cross[:rows],  # a view: the running rows are the first ones
            min(plan.top_k, self.vocab_size),
        )
        out = self.run_graph(step.feed(), list(names.DECODER_SERVING_OUTPUTS))
        self._new_key_values = out[names.NEW_KEY_VALUES]
        return StepCandidates(out[names.TOP_LOG_PROBS], out[names.TOP_IDS])

    def commit(self, update: StepUpdate) -> None:
        new_key_values, self._new_key_values = self._new_key_values, None
        for write in update.writes:
            rows, position = write.rows, write.position
            if write.reorders:  # beam search reordered its beams
                self.past[rows, ..., :position, :] = self.past[rows[write.parents], ..., :position, :]
            self.past[rows, ..., position, :] = new_key_values[rows[write.parents], ..., 0, :]
        self.move(update.moves)

    def move(self, moves: list[RowMove]) -> None:
        for move in moves:
            self.cross[move.target] = self.cross[move.source]
            self.past[move.target, ..., : move.length, :] = self.past[move.source, ..., : move.length, :]
