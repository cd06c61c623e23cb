"""Names of the exported ONNX graphs' inputs and outputs.

The build writes the graphs with these names and generates the Triton configs from them; the
server-side models read them. Tensor layouts (batch first, so Triton can batch every tensor):

encoder.onnx
  pixel_values           FP32 [batch, 3, image_size, image_size]
  cross_key_values       FP32 [batch, layers, 2 (key, value), heads, encoder_seq_len, head_dim]
    the decoder's cross-attention keys/values, computed once per image
decoder.onnx (one decoding step for a batch of sequences that may have different lengths)
  input_ids        INT64 [batch, 1]            the last token of each sequence
  position_ids     INT64 [batch, 1]            its position (0 for the decoder start token)
  attention_mask   INT64 [batch, past_len + 1] 1 where the cache slot (and the new token) is real, 0 for padding
  past_key_values  FP32  [batch, layers, 2, heads, past_len, head_dim]  the self-attention cache
  cross_key_values FP32  [batch, layers, 2, heads, encoder_seq_len, head_dim]
  top_k            INT64 [1]                   how many of the best next tokens to return (appended at export)
  log_probs        FP32  [batch, vocab_size]   log-softmax of the next-token logits
  new_key_values   FP32  [batch, layers, 2, heads, 1, head_dim]  this step's keys/values, to append to the cache
  top_log_probs    FP32  [batch, top_k]        the top_k largest log_probs of each row, best first; equal
  top_ids          INT64 [batch, top_k]          values in token order (ONNX TopK), as a stable argsort
    what the searches need of a step: rows x top_k crosses to the host instead of rows x vocab_size
"""

from __future__ import annotations

ENCODER_ONNX = "encoder.onnx"
DECODER_ONNX = "decoder.onnx"

PIXEL_VALUES = "pixel_values"
CROSS_KEY_VALUES = "cross_key_values"

INPUT_IDS = "input_ids"
POSITION_IDS = "position_ids"
ATTENTION_MASK = "attention_mask"
PAST_KEY_VALUES = "past_key_values"
TOP_K = "top_k"
LOG_PROBS = "log_probs"
NEW_KEY_VALUES = "new_key_values"
TOP_LOG_PROBS = "top_log_probs"
TOP_IDS = "top_ids"

ENCODER_INPUTS = (PIXEL_VALUES,)
ENCODER_OUTPUTS = (CROSS_KEY_VALUES,)
# The decoder step exported from PyTorch, then the top-k appended to it (trocr_build.export.append_top_k).
DECODER_STEP_INPUTS = (INPUT_IDS, POSITION_IDS, ATTENTION_MASK, PAST_KEY_VALUES, CROSS_KEY_VALUES)
DECODER_STEP_OUTPUTS = (LOG_PROBS, NEW_KEY_VALUES)
DECODER_INPUTS = (*DECODER_STEP_INPUTS, TOP_K)
DECODER_OUTPUTS = (*DECODER_STEP_OUTPUTS, TOP_LOG_PROBS, TOP_IDS)
# What a serving step fetches: the searches' candidates and the cache entries, never the full log_probs.
DECODER_SERVING_OUTPUTS = (TOP_LOG_PROBS, TOP_IDS, NEW_KEY_VALUES)

# The axis of the self-attention cache that grows by one at every step.
CACHE_SEQ_AXIS = 4
