"""Iteration-level (continuous) batching: which sequences run in the next decoder step, on which rows.

Pure bookkeeping, no tensors of the model: waiting and running sequence groups and their states, each row's
length and last token, admission (a bound on what waits, first come first served, a fair share of rows per
request, at most one encoder batch of images per step), and the searches that turn a step's candidates
(each row's top log-probabilities) into tokens and beam parents. `schedule()` emits a `StepPlan`; a model
runner (trocr_serving.engine.model_runner) executes it: it encodes the images that join into their rows, then runs
the step on the rows' caches; `update_from_output()` advances the searches and says which row's cache each row
goes on from (beam parents) and which rows move.

An image waits as its UINT8 pixels and is encoded only when it has rows to go to, so the encoder's output
(7 MB per image for trocr-small in float32) exists only for running rows, never for a queue.

Rows 0..active_rows-1 are the running ones, so the runner hands the graph contiguous slices: when rows are
freed, the last rows move into the holes.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from trocr_serving.engine.decoder_signature import StepCandidates
from trocr_serving.engine.search import BeamSearch, GreedySearch
from trocr_serving.refusals import InvalidRequestError, QueueFullError


class GroupStatus(Enum):
    WAITING = "waiting"  # queued with its pixels
    ENCODING = "encoding"  # admitted into rows: the next execute encodes its image into them
    RUNNING = "running"  # decoding
    FINISHED = "finished"  # finished, cancelled or failed: its rows are free


@dataclass(eq=False)
class SequenceGroup:
    """The rows of one image: 1 for greedy, num_beams for beam search."""

    search: GreedySearch | BeamSearch
    pixels: Any  # UINT8 [3, height, width] until admitted, then None (the runner holds its keys/values)
    request: Any = None  # the request this image belongs to (its groups share it); None: a request of its own
    future: Any = None  # where the caller awaits the result
    rows: list[int] = field(default_factory=list)
    length: int = 0  # tokens in the cache
    status: GroupStatus = GroupStatus.WAITING

    @property
    def width(self) -> int:
        return self.search.width

    @property
    def owner(self) -> int:
        """Identifies the request: groups of one request share it."""
        return id(self.request if self.request is not None else self)


@dataclass(frozen=True)
class RowLoad:
    """A group that joins: the runner encodes its image and copies the keys/values into each of its rows."""

    group: SequenceGroup
    rows: list[int]
    pixels: Any


@dataclass(frozen=True)
class StepPlan:
    loads: list[RowLoad]  # groups admitted for this step (at most one encoder batch)
    last_tokens: np.ndarray  # int64 [rows]
    lengths: np.ndarray  # int64 [rows]: cache positions of each row
    top_k: int  # candidates per row the searches need (2 x the widest beam, more where n-grams are banned)

    @property
    def rows(self) -> int:
        return len(self.last_tokens)


@dataclass(frozen=True)
class CacheWrite:
    """Row `rows[i]` goes on from the cache of row `rows[parents[i]]` as the step left it (beam search reorders;
    the step itself put each row's new keys/values at its position)."""

    rows: np.ndarray
    parents: np.ndarray


@dataclass(frozen=True)
class RowMove:
    """Row `source`'s cross-attention keys/values and cache now belong to row `target`."""

    source: int
    target: int


@dataclass
class StepUpdate:
    writes: list[CacheWrite] = field(default_factory=list)  # first the writes,
    moves: list[RowMove] = field(default_factory=list)  # then the moves that close the finished rows' holes
    finished: list[SequenceGroup] = field(default_factory=list)


class RowScheduler:
    def __init__(
        self,
        max_rows: int,
        max_cache_len: int,
        max_queued: int,
        start_token: int,
        max_request_rows: int | None = None,
        max_encoder_batch: int | None = None,
    ):
        self.max_rows = max_rows
        # Images admitted per step: one encoder call, so that the running rows wait for at most one call.
        self.max_encoder_batch = max_encoder_batch or max_rows
        # Rows one request may hold at once while others wait (its first image is always admitted), so that a
        # large beam-search request cannot take every row for minutes.
        self.max_request_rows = max_request_rows or max_rows
        self.max_cache_len = max_cache_len
        self.max_queued = max_queued
        self.start_token = start_token
        self.last_tokens = np.zeros(max_rows, dtype=np.int64)
        self.row_groups: list[SequenceGroup | None] = [None] * max_rows
        self.active_rows = 0
        self.waiting: deque[SequenceGroup] = deque()
        self.groups: list[SequenceGroup] = []

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
        self.check_queue_room(width, self.queued_rows)
        self.waiting.extend(groups)
        for group in groups:
            group.status = GroupStatus.WAITING

    def check_queue_room(self, rows: int, waiting: int) -> None:
        """Raise QueueFullError unless `rows` more fit beside `waiting` ones: rows free in the running batch take
        waiting rows first, and an empty queue takes any request (so one larger than the bound waits its turn
        instead of being refused for ever)."""
        if waiting and waiting + rows > self.max_queued + self.free_rows:
            raise QueueFullError(
                f"server busy: {waiting} sequences already wait (bound {self.max_queued}); retry later"
            )

    def schedule(self) -> StepPlan:
        """Admit what fits, then plan a step of every running row (no rows: nothing to run)."""
        loads = [RowLoad(group, list(group.rows), pixels) for group, pixels in self._admit()]
        rows = self.active_rows
        lengths = np.zeros(rows, dtype=np.int64)
        for group in self.groups:
            lengths[group.rows] = group.length
        top_k = max((group.search.candidates_needed() for group in self.groups), default=1)
        return StepPlan(loads, self.last_tokens[:rows].copy(), lengths, top_k)

    def _admit(self) -> list[tuple[SequenceGroup, Any]]:
        """Move waiting groups into free rows, first come first served, each request up to its share of rows,
        at most max_encoder_batch of them.

        A group that does not fit in the free rows stops the scan (so wide beam groups are not starved); a group
        whose request already holds its share is passed over for the next request's."""
        admitted = []
        held = Counter()
        for group in self.groups:
            held[group.owner] += group.width
        for group in list(self.waiting):
            if self.active_rows + group.width > self.max_rows or len(admitted) == self.max_encoder_batch:
                break
            if held[group.owner] and held[group.owner] + group.width > self.max_request_rows:
                continue
            held[group.owner] += group.width
            self.waiting.remove(group)
            group.rows = list(range(self.active_rows, self.active_rows + group.width))
            self.active_rows += group.width
            for row in group.rows:
                self.row_groups[row] = group
            self.last_tokens[group.rows] = self.start_token
            admitted.append((group, group.pixels))
            group.pixels = None
            group.status = GroupStatus.ENCODING
            group.length = 0
            self.groups.append(group)
        return admitted

    def update_from_output(self, candidates: StepCandidates) -> StepUpdate:
        """Advance every running group by the step's candidates ([rows, top_k] log-probabilities and ids)."""
        update = StepUpdate()
        for group in self.groups:
            group.status = GroupStatus.RUNNING
            rows = np.asarray(group.rows)
            tokens, parents, done = group.search.step(candidates.log_probs[rows], candidates.ids[rows])
            if done:
                update.finished.append(group)
                continue
            if group.length + 1 > self.max_cache_len:
                raise RuntimeError(f"cache length {self.max_cache_len} exceeded")
            update.writes.append(CacheWrite(rows, parents))
            self.last_tokens[rows] = tokens
            group.length += 1
        for group in update.finished:
            update.moves += self.remove(group)
        return update

    def remove(self, group: SequenceGroup) -> list[RowMove]:
        """Free a group's rows (finished or cancelled), or drop it from the queue; returns the row moves that
        keep the running rows contiguous (the runner must apply them)."""
        if group.status is GroupStatus.FINISHED:
            return []
        if group.status is GroupStatus.WAITING:
            group.status = GroupStatus.FINISHED
            if group in self.waiting:  # (a group made but never submitted is in no queue)
                self.waiting.remove(group)
            return []
        group.status = GroupStatus.FINISHED
        self.groups.remove(group)
        moves = []
        for row in sorted(group.rows, reverse=True):
            last = self.active_rows - 1
            if row != last:
                owner = self.row_groups[last]
                moves.append(RowMove(last, row))
                self.last_tokens[row] = self.last_tokens[last]
                self.row_groups[row] = owner
                owner.rows[owner.rows.index(last)] = row
            self.row_groups[last] = None
            self.active_rows -= 1
        group.rows = []
        return moves
