"""A plain greedy loop over the exported graphs, for one batch of images that starts together.

The server uses continuous batching (trocr_serving.engine.row_scheduler) instead; this loop is the in-process baseline
the benchmarks compare the server with, the build's check of a precision variant, and a simple way to run the
graphs without Triton (`LocalGraphs`). `step` is any callable that runs decoder.onnx. Finished rows leave the
batch at once; the others keep going.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trocr_serving import graph_names as names
from trocr_serving import scheduler_protocol as sp
from trocr_serving.engine.decoder_signature import DecoderStep, split_cross
from trocr_serving.execution import CPU, Execution
from trocr_serving.onnx_runtime import GraphRunner
from trocr_serving.pipeline_config import PipelineConfig

# (decoder inputs by name) -> (log_probs [batch, vocab], present_key_values [batch, layers, 2, heads, len, head_dim])
DecoderCall = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


@dataclass
class Hypothesis:
    token_ids: list[int] = field(default_factory=list)
    token_log_probs: list[float] = field(default_factory=list)

    @property
    def score(self) -> float:
        """Mean log-probability of the generated tokens (the end-of-sequence token included)."""
        return float(np.mean(self.token_log_probs)) if self.token_log_probs else 0.0


def greedy_decode(
    cross_key_values: np.ndarray,
    max_new_tokens: np.ndarray,
    config: PipelineConfig,
    step: DecoderCall,
    ignore_eos: bool = False,
) -> list[Hypothesis]:
    """Decode every row of `cross_key_values` greedily, each up to its own `max_new_tokens`.

    `ignore_eos` (benchmarks) generates exactly `max_new_tokens` tokens per row.
    """
    batch = cross_key_values.shape[0]
    shape = config.decoder
    hypotheses = [Hypothesis() for _ in range(batch)]
    rows = np.arange(batch)  # original row of each active sequence
    cross = split_cross(cross_key_values)
    past = np.zeros(shape.cache_shape(batch, 0), dtype=np.float32)
    past_rows = np.arange(batch)  # the row of `past` each active sequence continues
    last_tokens = np.full(batch, config.generation.decoder_start_token_id, dtype=np.int64)
    limits = np.asarray(max_new_tokens, dtype=np.int64)
    position = 0
    while rows.size:
        active = rows.size
        inputs = DecoderStep.of(last_tokens, np.full(active, position), past, cross, past_rows=past_rows).feed()
        log_probs, past = step(inputs)
        next_tokens = log_probs.argmax(axis=-1)
        chosen = log_probs[np.arange(active), next_tokens]
        for row, token, log_prob in zip(rows, next_tokens, chosen):
            hypotheses[row].token_ids.append(int(token))
            hypotheses[row].token_log_probs.append(float(log_prob))
        position += 1
        keep = (ignore_eos | (next_tokens != config.generation.eos_token_id)) & (position < limits[rows])
        past_rows = np.flatnonzero(keep)  # the graph gathers the kept rows' caches itself
        if not keep.all():
            cross, rows = tuple(part[keep] for part in cross), rows[keep]
            next_tokens = next_tokens[keep]
        last_tokens = next_tokens.astype(np.int64)
    return hypotheses


def teacher_forced_log_probs(
    step: DecoderCall, cross_key_values: np.ndarray, fed_tokens: np.ndarray, empty_cache_shape: tuple[int, ...]
) -> np.ndarray:
    """log_probs [rows, steps, vocab] when row r is fed fed_tokens[r] (the start token first) one after another,
    whatever the graph would have chosen: the build's checks against PyTorch and between precision variants."""
    rows, steps = fed_tokens.shape
    cross = split_cross(cross_key_values)
    past = np.zeros(empty_cache_shape, dtype=np.float32)
    got = []
    for position in range(steps):
        log_probs, past = step(DecoderStep.of(fed_tokens[:, position], np.full(rows, position), past, cross).feed())
        got.append(log_probs)
    return np.stack(got, axis=1)


def graph_paths(repository: Path) -> tuple[Path, Path]:
    """encoder.onnx and decoder.onnx of a built repository (both in the engine's folder)."""
    folder = repository / sp.GRAPHS_FOLDER
    return folder / names.ENCODER_ONNX, folder / names.DECODER_ONNX


class LocalGraphs:
    """A repository's encoder and decoder graphs in this process, with ONNX Runtime."""

    def __init__(self, encoder: Path, decoder: Path, intra_op_threads: int = 0, execution: Execution = CPU):
        self.encoder = GraphRunner(encoder, intra_op_threads, execution=execution)
        self.decoder = GraphRunner(decoder, intra_op_threads, execution=execution)

    def cross_key_values(self, pixels: np.ndarray) -> np.ndarray:
        """UINT8 resized images (trocr_serving.front.preprocessing.pixels_of) -> their cross-attention keys/values."""
        return self.encoder.run({names.PIXELS: pixels}, [names.CROSS_KEY_VALUES])[names.CROSS_KEY_VALUES]

    def step(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """A DecoderCall: (log_probs, present_key_values)."""
        out = self.decoder.run(inputs, [names.LOG_PROBS, names.PRESENT_KEY_VALUES])
        return out[names.LOG_PROBS], out[names.PRESENT_KEY_VALUES]
