"""A plain greedy loop over the exported graphs, for one batch of images that starts together.

The server uses continuous batching (trocr_serving.row_scheduler) instead; this loop is the in-process baseline
the benchmarks compare the server with, and a simple way to run the graphs without Triton. `step` is any
callable that runs decoder.onnx. Finished rows leave the batch at once; the others keep going.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from trocr_serving import graph_names as names
from trocr_serving.decoder_signature import DecoderStep
from trocr_serving.pipeline_config import PipelineConfig

# (decoder inputs by name) -> (log_probs [batch, vocab], new_key_values [batch, layers, 2, heads, 1, head_dim])
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
    cross = cross_key_values
    past = np.zeros(shape.cache_shape(batch, 0), dtype=np.float32)
    last_tokens = np.full(batch, config.generation.decoder_start_token_id, dtype=np.int64)
    limits = np.asarray(max_new_tokens, dtype=np.int64)
    position = 0
    while rows.size:
        active = rows.size
        log_probs, new_key_values = step(DecoderStep.of(last_tokens, np.full(active, position), past, cross).feed())
        next_tokens = log_probs.argmax(axis=-1)
        chosen = log_probs[np.arange(active), next_tokens]
        for row, token, log_prob in zip(rows, next_tokens, chosen):
            hypotheses[row].token_ids.append(int(token))
            hypotheses[row].token_log_probs.append(float(log_prob))
        position += 1
        keep = (ignore_eos | (next_tokens != config.generation.eos_token_id)) & (position < limits[rows])
        past = np.concatenate([past, new_key_values], axis=names.CACHE_SEQ_AXIS)
        if not keep.all():
            past, cross, rows = past[keep], cross[keep], rows[keep]
            next_tokens = next_tokens[keep]
        last_tokens = next_tokens.astype(np.int64)
    return hypotheses
