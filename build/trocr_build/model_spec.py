"""TrOCR-family models made here: a DeiT encoder and a TrOCR decoder of chosen dimensions, with a local
byte-level tokenizer and the image processor that matches the encoder's input size."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    DeiTConfig,
    GenerationConfig,
    PreTrainedTokenizerFast,
    TrOCRConfig,
    TrOCRProcessor,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
)

from trocr_build.reference import VIT_PIL_IMAGE_PROCESSOR
from trocr_build.synthetic_tokenizer import SPECIAL_TOKENS, build_tokenizer

PIL_BILINEAR = 2
ENCODER_CONFIGS = {"deit": DeiTConfig, "vit": ViTConfig}
BOS, PAD, EOS, UNK = range(len(SPECIAL_TOKENS))


@dataclass(frozen=True)
class ModelSpec:
    image_height: int
    image_width: int
    patch_size: int | tuple[int, int]  # (height, width) for non-square patches
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
    activation: str = "relu"
    encoder_kind: str = "deit"  # or "vit" (no distillation token: the layout of pretrained ViT/DINOv2 weights)
    layer_norm_eps: float = 1e-12
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(rows, columns) of patches: the encoder's tokens after its leading class and distillation tokens."""
        height, width = (self.patch_size, self.patch_size) if isinstance(self.patch_size, int) else self.patch_size
        return self.image_height // height, self.image_width // width


def build_model(spec: ModelSpec) -> tuple[VisionEncoderDecoderModel, TrOCRProcessor]:
    """An untrained model (transformers' default initialisation) and its processor."""
    encoder = ENCODER_CONFIGS[spec.encoder_kind](
        hidden_size=spec.encoder_hidden_size,
        num_hidden_layers=spec.encoder_layers,
        num_attention_heads=spec.encoder_heads,
        intermediate_size=spec.encoder_intermediate_size,
        image_size=(spec.image_height, spec.image_width),
        patch_size=spec.patch_size,
        qkv_bias=True,
        layer_norm_eps=spec.layer_norm_eps,
    )
    decoder = TrOCRConfig(
        vocab_size=spec.vocab_size,
        d_model=spec.d_model,
        decoder_layers=spec.decoder_layers,
        decoder_attention_heads=spec.decoder_heads,
        decoder_ffn_dim=spec.decoder_ffn_dim,
        activation_function=spec.activation,
        max_position_embeddings=spec.max_position_embeddings,
        cross_attention_hidden_size=spec.encoder_hidden_size,
        layernorm_embedding=True,
        scale_embedding=True,
        use_learned_position_embeddings=True,
        tie_word_embeddings=False,
        bos_token_id=BOS,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=EOS,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = EOS
    config.pad_token_id = PAD
    config.eos_token_id = EOS
    config.tie_word_embeddings = False
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=EOS,
        bos_token_id=BOS,
        pad_token_id=PAD,
        eos_token_id=EOS,
        max_length=spec.max_length,
        num_beams=1,
    )
    image_processor = VIT_PIL_IMAGE_PROCESSOR(
        do_resize=True,
        size={"height": spec.image_height, "width": spec.image_width},
        resample=PIL_BILINEAR,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(spec.image_mean),
        image_std=list(spec.image_std),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(spec.vocab_size),
        bos_token=SPECIAL_TOKENS[BOS],
        pad_token=SPECIAL_TOKENS[PAD],
        eos_token=SPECIAL_TOKENS[EOS],
        unk_token=SPECIAL_TOKENS[UNK],
        clean_up_tokenization_spaces=False,
    )
    return model, TrOCRProcessor(image_processor=image_processor, tokenizer=tokenizer)
