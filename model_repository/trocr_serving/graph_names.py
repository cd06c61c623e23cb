"""Names of the exported ONNX graphs' inputs and outputs.

The build writes the graphs with these names and generates the Triton configs from them; the
server-side models read them. Tensor layouts (batch first, so Triton can batch every tensor):

encoder.onnx
  pixel_values           FP32 [batch, 3, image_size, image_size]
  encoder_hidden_states  FP32 [batch, encoder_seq_len, encoder_hidden_size]
  cross_key_values       FP32 [batch, layers, 2 (key, value), heads, encoder_seq_len, head_dim]
    the decoder's cross-attention keys/values, computed once per image
decoder.onnx (one decoding step for a batch of sequences that may have different lengths)
  input_ids        INT64 [batch, 1]            the last token of each sequence
  position_ids     INT64 [batch, 1]            its position (0 for the decoder start token)
  attention_mask   INT64 [batch, past_len + 1] 1 where the cache slot (and the new token) is real, 0 for padding
  past_key_values  FP32  [batch, layers, 2, heads, past_len, head_dim]  the self-attention cache
  cross_key_values FP32  [batch, layers, 2, heads, encoder_seq_len, head_dim]
  log_probs        FP32  [batch, vocab_size]   log-softmax of the next-token logits
  new_key_values   FP32  [batch, layers, 2, heads, 1, head_dim]  this step's keys/values, to append to the cache
"""

from __future__ import annotations

ENCODER_ONNX = "encoder.onnx"
DECODER_ONNX = "decoder.onnx"

PIXEL_VALUES = "pixel_values"
ENCODER_HIDDEN_STATES = "encoder_hidden_states"
CROSS_KEY_VALUES = "cross_key_values"

INPUT_IDS = "input_ids"
POSITION_IDS = "position_ids"
ATTENTION_MASK = "attention_mask"
PAST_KEY_VALUES = "past_key_values"
LOG_PROBS = "log_probs"
NEW_KEY_VALUES = "new_key_values"

ENCODER_INPUTS = (PIXEL_VALUES,)
ENCODER_OUTPUTS = (ENCODER_HIDDEN_STATES, CROSS_KEY_VALUES)
DECODER_INPUTS = (INPUT_IDS, POSITION_IDS, ATTENTION_MASK, PAST_KEY_VALUES, CROSS_KEY_VALUES)
DECODER_OUTPUTS = (LOG_PROBS, NEW_KEY_VALUES)

# The axis of the self-attention cache that grows by one at every step.
CACHE_SEQ_AXIS = 4
