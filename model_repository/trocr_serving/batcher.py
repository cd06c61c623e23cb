"""Iteration-level (continuous) batching of decoder steps across requests.

Every in-flight sequence of every request advances in one batched decoder call per step. A new image joins
at the next step; a finished one leaves at once and its rows are reused. The cross-attention keys/values
and the self-attention cache of each row stay here, in preallocated pools, for the life of the sequence:
nothing of that size crosses a process boundary per step.

Rows 0..active_rows-1 of the pools are the active ones, so the cross-attention keys/values go to the
decoder as a view, without a copy. When rows are freed, the last rows move into the holes.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trocr_serving import graph_names as names
from trocr_serving.pipeline_config import DecoderShape
from trocr_serving.refusals import InvalidRequestError, QueueFullError
from trocr_serving.search import BeamSearch, GreedySearch


@dataclass(eq=False)
class SequenceGroup:
    """The rows of one image: 1 for greedy, num_beams for beam search."""

    search: GreedySearch | BeamSearch
    cross_key_values: np.ndarray | None  # [layers, 2, heads, encoder_seq_len, head_dim], dropped once admitted
    request: Any = None  # the request this image belongs to (its groups share it); None: a request of its own
    future: Any = None  # where the caller awaits the result
    rows: list[int] = field(default_factory=list)
    length: int = 0  # tokens in the cache

    @property
    def width(self) -> int:
        return self.search.width

    @property
    def owner(self) -> int:
        """Identifies the request: groups of one request share it."""
        return id(self.request if self.request is not None else self)


class ContinuousBatcher:
    def __init__(
        self,
        shape: DecoderShape,
        max_rows: int,
        max_cache_len: int,
        max_queued: int,
        start_token: int,
        max_request_rows: int | None = None,
    ):
        self.shape = shape
        self.max_rows = max_rows
        # Rows one request may hold at once while others wait (its first image is always admitted), so that a
        # large beam-search request cannot take every row for minutes.
        self.max_request_rows = max_request_rows or max_rows
        self.max_cache_len = max_cache_len
        self.max_queued = max_queued
        self.start_token = start_token
        layers, heads, head_dim = shape.num_layers, shape.num_heads, shape.head_dim
        # np.zeros maps pages lazily: memory is used as rows are.
        self.cross = np.zeros((max_rows, layers, 2, heads, shape.encoder_seq_len, head_dim), dtype=np.float32)
        self.past = np.zeros((max_rows, layers, 2, heads, max_cache_len, head_dim), dtype=np.float32)
        self.last_tokens = np.zeros(max_rows, dtype=np.int64)
        self.row_groups: list[SequenceGroup | None] = [None] * max_rows
        self.active_rows = 0
        self.waiting: deque[SequenceGroup] = deque()
        self.groups: list[SequenceGroup] = []

    @staticmethod
    def cache_bytes_per_row(shape: DecoderShape, max_cache_len: int) -> int:
        per_position = shape.num_layers * 2 * shape.num_heads * shape.head_dim * 4
        return per_position * (shape.encoder_seq_len + max_cache_len)

    @property
    def free_rows(self) -> int:
        return self.max_rows - self.active_rows

    @property
    def queued_rows(self) -> int:
        return sum(group.width for group in self.waiting)

    def submit(self, groups: list[SequenceGroup]) -> None:
        """Queue the images of one request, all or none (an empty queue takes any request)."""
        width = sum(group.width for group in groups)
        if any(group.width > self.max_rows for group in groups):
            raise InvalidRequestError(f"num_beams exceeds the {self.max_rows} decoder rows the server has")
        if self.queued_rows and self.queued_rows + width > self.max_queued + self.free_rows:
            raise QueueFullError(
                f"server busy: {self.queued_rows} sequences already wait (bound {self.max_queued}); retry later"
            )
        self.waiting.extend(groups)

    def admit(self) -> list[SequenceGroup]:
        """Move waiting groups into free rows, first come first served, each request up to its share of rows.

        A group that does not fit in the free rows stops the scan (so wide beam groups are not starved); a group
        whose request already holds its share is passed over for the next request's."""
        admitted = []
        held = Counter()
        for group in self.groups:
            held[group.owner] += group.width
        for group in list(self.waiting):
            if self.active_rows + group.width > self.max_rows:
                break
            if held[group.owner] and held[group.owner] + group.width > self.max_request_rows:
                continue
            held[group.owner] += group.width
            self.waiting.remove(group)
            group.rows = list(range(self.active_rows, self.active_rows + group.width))
            self.active_rows += group.width
            for row in group.rows:
                self.cross[row] = group.cross_key_values
                self.row_groups[row] = group
            self.last_tokens[group.rows] = self.start_token
            group.cross_key_values = None
            group.length = 0
            self.groups.append(group)
            admitted.append(group)
        return admitted

    def step_inputs(self) -> dict[str, np.ndarray]:
        rows = self.active_rows
        lengths = np.zeros(rows, dtype=np.int64)
        for group in self.groups:
            lengths[group.rows] = group.length
        longest = int(lengths.max())
        # 1 for each row's own cache slots and for the new token (the last column); 0 for padding
        mask = (np.arange(longest + 1)[None, :] < lengths[:, None]).astype(np.int64)
        mask[:, longest] = 1
        return {
            names.INPUT_IDS: self.last_tokens[:rows, None].copy(),
            names.POSITION_IDS: lengths[:, None],
            names.ATTENTION_MASK: mask,
            names.PAST_KEY_VALUES: np.ascontiguousarray(self.past[:rows, :, :, :, :longest]),
            names.CROSS_KEY_VALUES: self.cross[:rows],
        }

    def apply(self, log_probs: np.ndarray, new_key_values: np.ndarray) -> list[SequenceGroup]:
        """Advance every group by the step's output; returns the groups that finished (their rows are freed)."""
        finished = []
        for group in self.groups:
            rows = np.asarray(group.rows)
            tokens, parents, done = group.search.step(log_probs[rows])
            if done:
                finished.append(group)
                continue
            position = group.length
            if group.length + 1 > self.max_cache_len:
                raise RuntimeError(f"cache length {self.max_cache_len} exceeded")
            if np.any(parents != np.arange(len(rows))):  # beam search reordered its beams
                self.past[rows, ..., :position, :] = self.past[rows[parents], ..., :position, :]
            self.past[rows, ..., position, :] = new_key_values[rows[parents], ..., 0, :]
            self.last_tokens[rows] = tokens
            group.length += 1
        for group in finished:
            self.remove(group)
        return finished

    def remove(self, group: SequenceGroup) -> None:
        """Free a group's rows (finished or cancelled), or drop it from the queue."""
        if group in self.waiting:
            self.waiting.remove(group)
            return
        if group not in self.groups:
            return
        self.groups.remove(group)
        for row in sorted(group.rows, reverse=True):
            last = self.active_rows - 1
            if row != last:
                self._move_row(last, row)
            self.row_groups[last] = None
            self.active_rows -= 1
        group.rows = []

    def _move_row(self, source: int, target: int) -> None:
        owner = self.row_groups[source]
        self.cross[target] = self.cross[source]
        self.past[target, ..., : owner.length, :] = self.past[source, ..., : owner.length, :]
        self.last_tokens[target] = self.last_tokens[source]
        self.row_groups[target] = owner
        owner.rows[owner.rows.index(source)] = target
