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
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrOCRProcessor, VisionEncoderDecoderModel

from trocr_build.model_spec import ModelSpec, build_model
from trocr_serving import paths

LOGGER = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"
# Bump when the generator changes, so cached models are made again (4: weights drawn from a generator of
# their own in parameter-name order, the same under transformers 4 and 5).
GENERATOR_VERSION = "4"
ATTENTION_GAIN = 4.0
POSITION_EMBEDDING_STD = 2.0


@dataclass(frozen=True)
class RandomModelSpec:
    model: ModelSpec
    seed: int


RANDOM_MODELS = {
    "small": RandomModelSpec(
        model=ModelSpec(
            image_height=384,
            image_width=384,
            patch_size=16,
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
        ),
        seed=20261124,
    ),
    "tiny": RandomModelSpec(
        model=ModelSpec(
            image_height=64,
            image_width=64,
            patch_size=16,
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
        ),
        seed=7,
    ),
}


def is_random_model(model: str) -> bool:
    return model.startswith(RANDOM_PREFIX)


def random_model_dir(model: str, cache_dir: Path | None = None) -> Path:
    """Path of the Hugging Face directory of `random:<name>`, created on first use."""
    name = model.removeprefix(RANDOM_PREFIX)
    if name not in RANDOM_MODELS:
        raise ValueError(f"unknown random model {model!r}: choose one of random:{', random:'.join(RANDOM_MODELS)}")
    directory = (cache_dir or paths.cache_dir()) / f"random-{name}-v{GENERATOR_VERSION}"
    if not (directory / "model.safetensors").exists():
        LOGGER.info("creating %s in %s", model, directory)
        save_random_model(RANDOM_MODELS[name], directory)
    return directory


def _variance_preserving_init(model: torch.nn.Module, attention_gain: float, generator: torch.Generator) -> None:
    """Every weight drawn anew from `generator`, module by module in name order: the model's own
    initialisation, and the order in which a transformers release registers modules, change nothing."""

    def draw(tensor: torch.Tensor, std: float) -> None:
        with torch.no_grad():
            tensor.normal_(0.0, std, generator=generator)

    for name, module in sorted(model.named_modules(), key=lambda item: item[0]):
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            # Larger query/key weights make attention peaked: averaging over many random values would
            # otherwise wash out what the image (cross-attention) and the sequence (self-attention) say.
            # Only in the decoder: in the 12-layer encoder peaked attention makes the output chaotic (fp32
            # rounding alone moves it), and parity with the reference would then hinge on rounding.
            in_decoder = name.startswith("decoder.")
            gain = attention_gain if in_decoder and name.endswith(("q_proj", "k_proj")) else 1.0
            draw(module.weight, gain / math.sqrt(fan_in))
            if module.bias is not None:
                draw(module.bias, 0.02)
        elif isinstance(module, torch.nn.Embedding):
            # Token embeddings are multiplied by sqrt(d_model): keep them on the scale of the positions.
            # Positions get more weight than tokens, so the output moves along the sequence.
            scale = getattr(module, "embed_scale", None)
            std = 1.0 / scale if scale else POSITION_EMBEDDING_STD
            draw(module.weight, std)
        elif isinstance(module, torch.nn.LayerNorm):
            with torch.no_grad():
                module.weight.fill_(1.0)
                module.bias.fill_(0.0)
    for name, parameter in sorted(model.named_parameters(), key=lambda item: item[0]):
        if name.endswith(("cls_token", "distillation_token", "position_embeddings")):
            draw(parameter, 1.0)


def build_random_model(spec: RandomModelSpec) -> tuple[VisionEncoderDecoderModel, TrOCRProcessor]:
    torch.manual_seed(spec.seed)
    model, processor = build_model(spec.model)
    _variance_preserving_init(model, ATTENTION_GAIN, torch.Generator().manual_seed(spec.seed))
    model.eval()
    return model, processor


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
