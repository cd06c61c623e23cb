"""The one signature of a decoder step: what every caller of decoder.onnx builds and reads.

The server's model runner, the in-process greedy loop, the build's validation against PyTorch and the
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
    # (the two caches are None where the model runner binds them in device memory)
    past_key_values: np.ndarray | None  # float [cache_rows, layers, 2, heads, >= longest, head_dim]
    past_rows: np.ndarray  # int64 [rows]: the row of past_key_values each row continues
    cross_key_values: tuple[np.ndarray, ...] | None  # split_cross(): [rows, heads, encoder_seq_len, head_dim] each
    top_k: np.ndarray  # int64 [1]: candidates per row the step returns (top_log_probs, top_ids)

    @classmethod
    def of(
        cls,
        last_tokens: np.ndarray,
        lengths: np.ndarray,
        past_key_values: np.ndarray | None,
        cross_key_values: tuple[np.ndarray, ...] | None,
        top_k: int = 1,
        past_rows: np.ndarray | None = None,
    ) -> DecoderStep:
        """`past_key_values` holds at least `lengths.max()` positions (a shorter row's extra slots are masked out);
        row i continues row `past_rows[i]` of it (default: row i)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        longest = int(lengths.max()) if lengths.size else 0
        mask = (np.arange(longest + 1)[None, :] < lengths[:, None]).astype(np.int64)
        mask[:, longest] = 1  # the new token
        return cls(
            np.asarray(last_tokens, dtype=np.int64).reshape(-1, 1),
            lengths[:, None],
            mask,
            past_key_values,
            np.arange(len(lengths), dtype=np.int64) if past_rows is None else np.asarray(past_rows, dtype=np.int64),
            cross_key_values,
            np.array([top_k], dtype=np.int64),
        )

    @property
    def rows(self) -> int:
        return len(self.input_ids)

    def host_inputs(self) -> dict[str, np.ndarray]:
        """The inputs that come from the host every step (the searches' tokens and the rows' lengths)."""
        return {
            names.INPUT_IDS: self.input_ids,
            names.POSITION_IDS: self.position_ids,
            names.ATTENTION_MASK: self.attention_mask,
            names.PAST_ROWS: self.past_rows,
            names.TOP_K: self.top_k,
        }

    def feed(self) -> dict[str, np.ndarray]:
        """The graph's inputs by name."""
        cross = dict(zip(names.cross_inputs(len(self.cross_key_values) // 2), self.cross_key_values))
        return {**self.host_inputs(), names.PAST_KEY_VALUES: self.past_key_values, **cross}


def split_cross(cross_key_values: np.ndarray) -> tuple[np.ndarray, ...]:
    """The encoder's cross_key_values [rows, layers, 2, heads, seq, head_dim] as the decoder's inputs (in
    names.cross_inputs order), each contiguous."""
    layers = cross_key_values.shape[1]
    return tuple(np.ascontiguousarray(cross_key_values[:, layer, part]) for layer in range(layers) for part in (0, 1))


@dataclass(frozen=True)
class StepCandidates:
    """What a serving step returns to the searches: each row's top_k log-probabilities, best first, and their
    token ids (names.TOP_LOG_PROBS, names.TOP_IDS)."""

    log_probs: np.ndarray  # float [rows, top_k]
    ids: np.ndarray  # int64 [rows, top_k]
