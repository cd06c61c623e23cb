"""Offline models: seeded random weights with TrOCR's architecture, saved as a Hugging Face model directory.

`random:small` has the dimensions of microsoft/trocr-small-handwritten (DeiT-small encoder at 384x384,
578 encoder tokens of width 384; TrOCR decoder with 6 layers, d_model 256, 8 heads, vocabulary 64044).
`random:tiny` is a few MB, for tests. Their weights are random: their text is meaningless.

The default initialisation (std 0.02) makes a random TrOCR emit end-of-sequence at once or one token
forever, which makes parity tests prove little. A variance-preserving initialisation (std 1/sqrt(fan_in))
gives outputs that change with the image and along the sequence.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    DeiTConfig,
    GenerationConfig,
    PreTrainedTokenizerFast,
    TrOCRConfig,
    TrOCRProcessor,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTImageProcessor,
)

from trocr_build.synthetic_tokenizer import SPECIAL_TOKENS, build_tokenizer

LOGGER = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"
# Bump when the generator changes, so cached models are made again.
GENERATOR_VERSION = "3"
PIL_BILINEAR = 2
ATTENTION_GAIN = 4.0
POSITION_EMBEDDING_STD = 2.0


@dataclass(frozen=True)
class RandomModelSpec:
    image_size: int
    encoder_hidden_size: int
    encoder_layers: int
    encoder_heads: int
    encoder_intermediate_size: int
    vocab_size: int
    d_model: int
    decoder_layers: int
    decoder_heads: int
    decoder_ffn_dim: int
    max_position_embeddings: int
    max_length: int
    seed: int


RANDOM_MODELS = {
    "small": RandomModelSpec(
        image_size=384,
        encoder_hidden_size=384,
        encoder_layers=12,
        encoder_heads=6,
        encoder_intermediate_size=1536,
        vocab_size=64044,
        d_model=256,
        decoder_layers=6,
        decoder_heads=8,
        decoder_ffn_dim=1024,
        max_position_embeddings=512,
        max_length=64,
        seed=20261124,
    ),
    "tiny": RandomModelSpec(
        image_size=64,
        encoder_hidden_size=32,
        encoder_layers=2,
        encoder_heads=2,
        encoder_intermediate_size=64,
        vocab_size=1000,
        d_model=32,
        decoder_layers=2,
        decoder_heads=4,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        max_length=32,
        seed=7,
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("TROCR_TRITON_CACHE", Path.home() / ".cache" / "trocr-triton"))


def is_random_model(model: str) -> bool:
    return model.startswith(RANDOM_PREFIX)


def random_model_dir(model: str, cache_dir: Path | None = None) -> Path:
    """Path of the Hugging Face directory of `random:<name>`, created on first use."""
    name = model.removeprefix(RANDOM_PREFIX)
    if name not in RANDOM_MODELS:
        raise ValueError(f"unknown random model {model!r}: choose one of random:{', random:'.join(RANDOM_MODELS)}")
    directory = (cache_dir or default_cache_dir()) / f"random-{name}-v{GENERATOR_VERSION}"
    if not (directory / "model.safetensors").exists():
        LOGGER.info("creating %s in %s", model, directory)
        save_random_model(RANDOM_MODELS[name], directory)
    return directory


def _variance_preserving_init(model: torch.nn.Module, attention_gain: float) -> None:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            # Larger query/key weights make attention peaked: averaging over many random values would
            # otherwise wash out what the image (cross-attention) and the sequence (self-attention) say.
            # Only in the decoder: in the 12-layer encoder peaked attention makes the output chaotic (fp32
            # rounding alone moves it), and parity with the reference would then hinge on rounding.
            in_decoder = name.startswith("decoder.")
            gain = attention_gain if in_decoder and name.endswith(("q_proj", "k_proj")) else 1.0
            torch.nn.init.normal_(module.weight, std=gain / math.sqrt(fan_in))
            if module.bias is not None:
                torch.nn.init.normal_(module.bias, std=0.02)
        elif isinstance(module, torch.nn.Embedding):
            # Token embeddings are multiplied by sqrt(d_model): keep them on the scale of the positions.
            # Positions get more weight than tokens, so the output moves along the sequence.
            scale = getattr(module, "embed_scale", None)
            std = 1.0 / scale if scale else POSITION_EMBEDDING_STD
            torch.nn.init.normal_(module.weight, std=std)
    for name, parameter in model.named_parameters():
        if name.endswith(("cls_token", "distillation_token", "position_embeddings")):
            torch.nn.init.normal_(parameter, std=1.0)


def build_random_model(spec: RandomModelSpec) -> tuple[VisionEncoderDecoderModel, TrOCRProcessor]:
    torch.manual_seed(spec.seed)
    encoder = DeiTConfig(
        hidden_size=spec.encoder_hidden_size,
        num_hidden_layers=spec.encoder_layers,
        num_attention_heads=spec.encoder_heads,
        intermediate_size=spec.encoder_intermediate_size,
        image_size=spec.image_size,
        patch_size=16,
        qkv_bias=True,
    )
    bos, pad, eos, _unk = range(len(SPECIAL_TOKENS))
    decoder = TrOCRConfig(
        vocab_size=spec.vocab_size,
        d_model=spec.d_model,
        decoder_layers=spec.decoder_layers,
        decoder_attention_heads=spec.decoder_heads,
        decoder_ffn_dim=spec.decoder_ffn_dim,
        activation_function="relu",
        max_position_embeddings=spec.max_position_embeddings,
        cross_attention_hidden_size=spec.encoder_hidden_size,
        layernorm_embedding=True,
        scale_embedding=True,
        use_learned_position_embeddings=True,
        tie_word_embeddings=False,
        bos_token_id=bos,
        pad_token_id=pad,
        eos_token_id=eos,
        decoder_start_token_id=eos,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = eos
    config.pad_token_id = pad
    config.eos_token_id = eos
    config.tie_word_embeddings = False
    model = VisionEncoderDecoderModel(config=config)
    _variance_preserving_init(model, ATTENTION_GAIN)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=eos,
        bos_token_id=bos,
        pad_token_id=pad,
        eos_token_id=eos,
        max_length=spec.max_length,
        num_beams=1,
    )
    model.eval()
    image_processor = ViTImageProcessor(
        do_resize=True,
        size={"height": spec.image_size, "width": spec.image_size},
        resample=PIL_BILINEAR,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(spec.vocab_size),
        bos_token=SPECIAL_TOKENS[bos],
        pad_token=SPECIAL_TOKENS[pad],
        eos_token=SPECIAL_TOKENS[eos],
        unk_token=SPECIAL_TOKENS[_unk],
        clean_up_tokenization_spaces=False,
    )
    return model, TrOCRProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_random_model(spec: RandomModelSpec, directory: Path) -> None:
    """Write into a private folder, then rename: a concurrent process never sees a half-written model."""
    model, processor = build_random_model(spec)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    try:
        tmp.rename(directory)
    except OSError:  # another process made it first
        shutil.rmtree(tmp)
