"""The one signature of a decoder step: what every caller of decoder.onnx builds and reads.

The server's decoder runner, the in-process greedy loop, the build's validation against PyTorch and the
benchmark's ceiling all feed the graph through `DecoderStep`: rows of possibly different lengths, padded
to the longest, with the attention mask and positions that follow from those lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trocr_serving import graph_names as names


@dataclass(frozen=True)
class DecoderStep:
    input_ids: np.ndarray  # int64 [rows, 1]: each row's last token
    position_ids: np.ndarray  # int64 [rows, 1]: its position (the row's cache length)
    attention_mask: np.ndarray  # int64 [rows, longest + 1]: 1 for a row's cache slots and the new token
    past_key_values: np.ndarray  # float [rows, layers, 2, heads, longest, head_dim]
    cross_key_values: np.ndarray  # float [rows, layers, 2, heads, encoder_seq_len, head_dim]
    top_k: np.ndarray  # int64 [1]: candidates per row the step returns (top_log_probs, top_ids)

    @classmethod
    def of(
        cls,
        last_tokens: np.ndarray,
        lengths: np.ndarray,
        past_key_values: np.ndarray,
        cross_key_values: np.ndarray,
        top_k: int = 1,
    ) -> DecoderStep:
        """`past_key_values` holds `lengths.max()` positions; a shorter row's extra slots are masked out."""
        lengths = np.asarray(lengths, dtype=np.int64)
        longest = int(lengths.max()) if lengths.size else 0
        mask = (np.arange(longest + 1)[None, :] < lengths[:, None]).astype(np.int64)
        mask[:, longest] = 1  # the new token
        return cls(
            np.asarray(last_tokens, dtype=np.int64).reshape(-1, 1),
            lengths[:, None],
            mask,
            past_key_values,
            cross_key_values,
            np.array([top_k], dtype=np.int64),
        )

    @property
    def rows(self) -> int:
        return len(self.input_ids)

    def feed(self) -> dict[str, np.ndarray]:
        """The graph's inputs by name (names.DECODER_INPUTS)."""
        return {
            names.INPUT_IDS: self.input_ids,
            names.POSITION_IDS: self.position_ids,
            names.ATTENTION_MASK: self.attention_mask,
            names.PAST_KEY_VALUES: self.past_key_values,
            names.CROSS_KEY_VALUES: self.cross_key_values,
            names.TOP_K: self.top_k,
        }


@dataclass(frozen=True)
class StepCandidates:
    """What a serving step returns to the searches: each row's top_k log-probabilities, best first, and their
    token ids (names.TOP_LOG_PROBS, names.TOP_IDS)."""

    log_probs: np.ndarray  # float [rows, top_k]
    ids: np.ndarray  # int64 [rows, top_k]
