"""What the `trocr` model needs to know about the exported model: written by the build as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

PIPELINE_CONFIG_FILE = "pipeline.json"
TOKENIZER_FILE = "tokenizer.json"
BUILD_INFO_FILE = "build_info.json"  # at the repository's top: what was built, from what, with which options


@dataclass(frozen=True)
class ImageConfig:
    """Mirrors the model's own image processor (ViTImageProcessor for TrOCR)."""

    height: int
    width: int
    resample: int  # PIL resampling filter id (2 = bilinear)
    rescale_factor: float
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]


@dataclass(frozen=True)
class DecoderShape:
    num_layers: int
    num_heads: int
    head_dim: int
    vocab_size: int
    encoder_seq_len: int
    max_positions: int  # learned position table size: no sequence may be longer

    def cache_shape(self, rows: int, length: int) -> tuple[int, ...]:
        """The self-attention cache of `rows` rows of `length` positions (decoder_signature.DecoderStep)."""
        return (rows, self.num_layers, 2, self.num_heads, length, self.head_dim)

    def cross_shape(self, rows: int) -> tuple[int, ...]:
        """The cross-attention keys/values of `rows` rows."""
        return (rows, self.num_layers, 2, self.num_heads, self.encoder_seq_len, self.head_dim)

    def row_bytes(self, max_cache_len: int, itemsize: int = 4) -> int:
        """Memory of one row in the server: its cross-attention keys/values and two self-attention caches (the
        model runner reads one step's cache and writes the next: trocr_serving.engine.model_runner)."""
        per_position = self.num_layers * 2 * self.num_heads * self.head_dim * itemsize
        return per_position * (self.encoder_seq_len + 2 * max_cache_len)


@dataclass(frozen=True)
class GenerationDefaults:
    """From the model's generation config: a request without parameters gets what `generate()` returns."""

    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int
    max_new_tokens: int
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False or "never", as in transformers
    no_repeat_ngram_size: int = 0


@dataclass(frozen=True)
class PipelineConfig:
    source_model: str
    image: ImageConfig
    decoder: DecoderShape
    generation: GenerationDefaults
    clean_up_tokenization_spaces: bool

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PipelineConfig:
        raw = json.loads(text)
        image = raw["image"]
        return cls(
            source_model=raw["source_model"],
            image=ImageConfig(
                **{**image, "image_mean": tuple(image["image_mean"]), "image_std": tuple(image["image_std"])}
            ),
            decoder=DecoderShape(**raw["decoder"]),
            generation=GenerationDefaults(**raw["generation"]),
            clean_up_tokenization_spaces=raw["clean_up_tokenization_spaces"],
        )

    @classmethod
    def load(cls, directory: Path) -> PipelineConfig:
        return cls.from_json((Path(directory) / PIPELINE_CONFIG_FILE).read_text())

    def save(self, directory: Path) -> None:
        (Path(directory) / PIPELINE_CONFIG_FILE).write_text(self.to_json() + "\n")

    @property
    def max_new_tokens_limit(self) -> int:
        """The longest generation the position table allows (the start token takes position 0)."""
        return self.decoder.max_positions - 1
