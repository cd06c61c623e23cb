"""The two graphs the project exports, as small torch modules around the Hugging Face model's own submodules.

The stock optimum decoder has no attention mask and one shared position for the whole batch, so it cannot
batch sequences of different lengths. `DecoderStepGraph` takes per-row positions, a mask over the
self-attention cache, and cross-attention keys/values that `EncoderGraph` computed once per image.
Layouts are documented in `trocr_serving.graph_names`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import VisionEncoderDecoderModel

from trocr_serving.pipeline_config import ImageConfig


def _split_heads(states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[batch, seq, heads * head_dim] -> [batch, heads, seq, head_dim]"""
    batch, seq, width = states.shape
    return states.view(batch, seq, num_heads, width // num_heads).transpose(1, 2)


class PixelNormalization(nn.Module):
    """UINT8 pixels [batch, 3, height, width] -> the image processor's pixel_values, FP32: rescaled in float64 and
    cast to float32, then normalised in float32, the processor's own arithmetic (its float64 rescale rounds
    differently from a float32 one), so that the server's images match the processor's exactly."""

    def __init__(self, image: ImageConfig):
        super().__init__()
        self.rescale_factor = image.rescale_factor
        self.register_buffer("mean", torch.tensor(image.image_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(image.image_std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        scaled = (pixels.to(torch.float64) * self.rescale_factor).to(torch.float32)
        return (scaled - self.mean) / self.std


class EncoderGraph(nn.Module):
    """pixels -> (cross_key_values,): the decoder's cross-attention keys/values, computed once per image (the
    encoder's hidden states themselves are used by nothing else, so they do not leave the graph)."""

    def __init__(self, model: VisionEncoderDecoderModel, image: ImageConfig):
        super().__init__()
        self.normalization = PixelNormalization(image)
        self.encoder = model.encoder
        self.enc_to_dec_proj = getattr(model, "enc_to_dec_proj", None)
        self.layers = model.decoder.model.decoder.layers
        self.num_heads = model.decoder.config.decoder_attention_heads

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor]:
        hidden = self.encoder(pixel_values=self.normalization(pixels)).last_hidden_state
        if self.enc_to_dec_proj is not None:
            hidden = self.enc_to_dec_proj(hidden)
        per_layer = []
        for layer in self.layers:
            keys = _split_heads(layer.encoder_attn.k_proj(hidden), self.num_heads)
            values = _split_heads(layer.encoder_attn.v_proj(hidden), self.num_heads)
            per_layer.append(torch.stack([keys, values], dim=1))  # [batch, 2, heads, seq, head_dim]
        return (torch.stack(per_layer, dim=1),)


class DecoderStepGraph(nn.Module):
    """One greedy/beam step for a batch of sequences of any lengths (see trocr_serving.graph_names)."""

    def __init__(self, model: VisionEncoderDecoderModel):
        super().__init__()
        decoder = model.decoder.model.decoder
        config = model.decoder.config
        self.embed_tokens = decoder.embed_tokens  # applies the embedding scale itself
        self.embed_positions = decoder.embed_positions
        self.learned_positions = config.use_learned_position_embeddings
        self.padding_idx = config.pad_token_id
        self.layernorm_embedding = decoder.layernorm_embedding
        self.layers = decoder.layers
        self.output_projection = model.decoder.output_projection
        self.num_heads = config.decoder_attention_heads

    def _position_embeddings(self, position_ids: torch.Tensor) -> torch.Tensor:
        if self.learned_positions:
            return nn.functional.embedding(position_ids + self.embed_positions.offset, self.embed_positions.weight)
        # Sinusoidal table: positions start after the padding index (fairseq's make_positions).
        table = self.embed_positions.weights.to(self.output_projection.weight.dtype)
        return nn.functional.embedding(position_ids + self.padding_idx + 1, table)

    @staticmethod
    def _attend(query, keys, values, bias=None):
        scores = torch.matmul(query, keys.transpose(-1, -2))
        if bias is not None:
            scores = scores + bias
        return torch.matmul(torch.softmax(scores, dim=-1), values)

    @staticmethod
    def _merge_heads(states: torch.Tensor) -> torch.Tensor:
        batch, heads, seq, head_dim = states.shape
        return states.transpose(1, 2).reshape(batch, seq, heads * head_dim)

    def forward(self, input_ids, position_ids, attention_mask, past_key_values, past_rows, *cross_key_values):
        """`cross_key_values`: each layer's keys then values [batch, heads, encoder_seq_len, head_dim]."""
        # Each row's cache: row past_rows[i] of the previous step's present_key_values, first past_len positions.
        past_len = attention_mask.shape[1] - 1
        past = past_key_values[:, :, :, :, :past_len].index_select(0, past_rows)
        hidden = self.embed_tokens(input_ids) + self._position_embeddings(position_ids)
        if self.layernorm_embedding is not None:
            hidden = self.layernorm_embedding(hidden)
        # [batch, past + 1] -> additive bias [batch, 1, 1, past + 1]
        bias = (1.0 - attention_mask.to(hidden.dtype))[:, None, None, :] * torch.finfo(hidden.dtype).min
        new_key_values = []
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            query = _split_heads(attention.q_proj(hidden) * attention.scaling, self.num_heads)
            key = _split_heads(attention.k_proj(hidden), self.num_heads)
            value = _split_heads(attention.v_proj(hidden), self.num_heads)
            keys = torch.cat([past[:, index, 0], key], dim=2)
            values = torch.cat([past[:, index, 1], value], dim=2)
            attended = self._merge_heads(self._attend(query, keys, values, bias))
            hidden = layer.self_attn_layer_norm(hidden + attention.out_proj(attended))

            cross = layer.encoder_attn
            query = _split_heads(cross.q_proj(hidden) * cross.scaling, self.num_heads)
            attended = self._merge_heads(
                self._attend(query, cross_key_values[2 * index], cross_key_values[2 * index + 1])
            )
            hidden = layer.encoder_attn_layer_norm(hidden + cross.out_proj(attended))

            feed_forward = layer.fc2(layer.activation_fn(layer.fc1(hidden)))
            hidden = layer.final_layer_norm(hidden + feed_forward)
            new_key_values.append(torch.stack([key, value], dim=1))  # [batch, 2, heads, 1, head_dim]
        logits = self.output_projection(hidden[:, 0, :])
        return torch.log_softmax(logits, dim=-1), self._present(past, torch.stack(new_key_values, dim=1), position_ids)

    @staticmethod
    def _present(past: torch.Tensor, new: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Each row's cache with its new keys/values at its own position (slots past a row's length are padding:
        the row's new entry goes to slot `position`; the appended last slot is padding unless position = past_len)."""
        appended = torch.cat([past, new], dim=4)  # [batch, layers, 2, heads, past_len + 1, head_dim]
        slots = position_ids.view(-1, 1, 1, 1, 1, 1).expand(new.shape)
        return appended.scatter(4, slots, new)
