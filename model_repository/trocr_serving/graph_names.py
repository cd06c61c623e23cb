"""Names of the exported ONNX graphs' inputs and outputs.

The build writes the graphs with these names and generates the Triton configs from them; the
server-side models read them. Tensor layouts (batch first, so Triton can batch every tensor):

encoder.onnx
  pixels                 UINT8 [batch, 3, height, width]   the image resized as the image processor does, channels
    first; the graph rescales and normalises it (the processor's pixel_values) before the vision encoder
  cross_key_values       FP32 [batch, layers, 2 (key, value), heads, encoder_seq_len, head_dim]
    the decoder's cross-attention keys/values, computed once per image
decoder.onnx (one decoding step for a batch of sequences that may have different lengths)
  input_ids          INT64 [batch, 1]            the last token of each sequence
  position_ids       INT64 [batch, 1]            its position = its cache length (0 for the decoder start token)
  attention_mask     INT64 [batch, past_len + 1] 1 for a row's cache slots 0..length-1 and the new token
  past_key_values    FP32  [cache_rows, layers, 2, heads, cache_len >= past_len, head_dim]
    the self-attention caches: the previous step's present_key_values (or any cache with enough positions)
  past_rows          INT64 [batch]               the row of past_key_values each sequence continues (beam
    parents, rows that left, new rows: a new row has length 0, so any row will do)
  cross_key_values.{layer}.key, cross_key_values.{layer}.value (for each layer)
                     FP32  [batch, heads, encoder_seq_len, head_dim]   an input per layer and part, so
    the server binds them from its buffers as they are (ONNX Runtime copies what a graph splits, and 2 x
    layers separate inputs cost no copy: splitting one input was half of a CPU step)
  top_k              INT64 [1]                   how many of the best next tokens to return (appended at export)
  log_probs          FP32  [batch, vocab_size]   log-softmax of the next-token logits
  present_key_values FP32  [batch, layers, 2, heads, past_len + 1, head_dim]  each row's cache with this step's
    keys/values at slot position_ids (the next step's past_key_values: the cache never leaves the device)
  top_log_probs      FP32  [batch, top_k]        the top_k largest log_probs of each row, best first; equal
  top_ids            INT64 [batch, top_k]          values in token order (ONNX TopK), as a stable argsort
    what the searches need of a step: rows x top_k crosses to the host instead of rows x vocab_size
row_copy.onnx (beside decoder.onnx: how the server's model runner fills rows of its cross-attention buffers)
  source FP32 [1 or rows, ...]  shape INT64 [rank]  ->  target FP32 [shape]  (ONNX Expand)
"""

from __future__ import annotations

ENCODER_ONNX = "encoder.onnx"
DECODER_ONNX = "decoder.onnx"
ROW_COPY_ONNX = "row_copy.onnx"

PIXELS = "pixels"
CROSS_KEY_VALUES = "cross_key_values"

INPUT_IDS = "input_ids"
POSITION_IDS = "position_ids"
ATTENTION_MASK = "attention_mask"
PAST_KEY_VALUES = "past_key_values"
PAST_ROWS = "past_rows"
TOP_K = "top_k"
LOG_PROBS = "log_probs"
PRESENT_KEY_VALUES = "present_key_values"
TOP_LOG_PROBS = "top_log_probs"
TOP_IDS = "top_ids"

ENCODER_INPUTS = (PIXELS,)
ENCODER_OUTPUTS = (CROSS_KEY_VALUES,)
# The decoder step exported from PyTorch, then the top-k appended to it (trocr_build.export.append_top_k).
DECODER_STEP_INPUTS = (INPUT_IDS, POSITION_IDS, ATTENTION_MASK, PAST_KEY_VALUES, PAST_ROWS)  # then cross_inputs()
DECODER_STEP_OUTPUTS = (LOG_PROBS, PRESENT_KEY_VALUES)
DECODER_OUTPUTS = (*DECODER_STEP_OUTPUTS, TOP_LOG_PROBS, TOP_IDS)
# What a serving step brings to the host: the searches' candidates, never the full log_probs nor the cache.
DECODER_HOST_OUTPUTS = (TOP_LOG_PROBS, TOP_IDS)


def cross_inputs(num_layers: int) -> tuple[str, ...]:
    """The decoder's cross-attention inputs: each layer's keys, then its values (cross_key_values[:, layer, part])."""
    return tuple(f"{CROSS_KEY_VALUES}.{layer}.{part}" for layer in range(num_layers) for part in ("key", "value"))


ROW_COPY_SOURCE = "source"
ROW_COPY_SHAPE = "shape"
ROW_COPY_TARGET = "target"

# The axis of the self-attention cache that grows by one at every step.
CACHE_SEQ_AXIS = 4
