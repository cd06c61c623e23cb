"""Precision variants of the exported graphs: the one place that names, for each variant, how its graphs are
made from the fp32 export, where it may be served, and how closely it must agree with the fp32 graphs (like
optimum's one validation tolerance per variant).

A variant is validated at build time against the fp32 graphs on the repository's sample images: the
log-probabilities of both along the fp32 greedy path (teacher forced, so one early difference does not hide
the others), and the greedy tokens of each. The figures go into build_info.json; a variant outside its bounds
fails the build.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from trocr_build.greedy import LocalGraphs, greedy_decode, teacher_forced_log_probs
from trocr_serving import graph_names as names
from trocr_serving.execution import CPU, Execution, visible_gpus
from trocr_serving.pipeline_config import PipelineConfig

LOGGER = logging.getLogger(__name__)

# Kept in float32 in an fp16 graph: the normalisations and the softmaxes, whose sums lose digits in float16,
# and the top-k over the float32 log-probabilities.
FP32_OPS = ("LayerNormalization", "Softmax", "LogSoftmax", "TopK")
# The nodes of the encoder graph's pixel normalisation (trocr_build.graphs.EncoderGraph.normalization: the export
# names nodes after the module path), kept float32 in the fp16 encoder so that it normalises as the processor.
ENCODER_NORMALIZATION_NODES = "/normalization/"
# Decoder outputs kept float32 in every variant: what the searches read on the host.
FLOAT32_DECODER_OUTPUTS = (names.LOG_PROBS, names.TOP_LOG_PROBS)


class VariantValidationError(RuntimeError):
    pass


def _to_float16(path: Path, keep_float32: list[str], keep_nodes_under: str | None = None) -> None:
    """Float tensors to float16, except the graph inputs and outputs named in `keep_float32`, the FP32_OPS and
    the nodes whose names start with `keep_nodes_under`."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # (its INFO lines list every initializer shared by float16 and float32 nodes: the LayerNorms' weights)
    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.WARNING)

    graph = onnx.load(str(path))
    kept = [node.name for node in graph.graph.node if keep_nodes_under and node.name.startswith(keep_nodes_under)]
    model = convert_float_to_float16(
        graph, keep_io_types=keep_float32, op_block_list=list(FP32_OPS), node_block_list=kept
    )
    onnx.save(model, str(path))


def _fp16(encoder: Path, decoder: Path) -> None:
    """The encoder writes its cross-attention keys/values in float16, the type of the decoder's buffers that the
    engine binds them into, and normalises the pixels in float32 as the image processor does; the decoder
    takes and returns its caches in float16 (half the device memory and traffic), log-probabilities float32."""
    _to_float16(encoder, [], keep_nodes_under=ENCODER_NORMALIZATION_NODES)
    _to_float16(decoder, list(FLOAT32_DECODER_OUTPUTS))


# Quantized to int8 (weights per output channel, activations per call): the weight matrix products (and
# a fused Attention's, where the fusion applies). Weights use 7 of their 8 bits (`reduce_range`): x86 CPUs
# without VNNI (AVX2, AVX-512F) multiply uint8 activations by int8 weights with an instruction that adds pairs
# of products in int16 and saturates; with 7-bit weights no pair overflows. On the shipped synthetic:small
# (AVX2), full-range weights: max log-prob error 2.3 and 81% greedy agreement on the samples; 7-bit: 1.18 and
# 100%, and held-out CER 30.90% against fp32's 31.24% (in-process greedy, 200 lines). Its bound, 1.5, admits
# that and refuses saturating or random-weight quantization.
INT8_OPS = ("MatMul", "Gemm", "Attention")


def _fuse_encoder(path: Path) -> None:
    """ONNX Runtime's transformer fusions for ViT-like encoders: LayerNorm with its residual add
    (SkipLayerNormalization) and bias with GELU (BiasGelu). Its multi-head Attention fusion does not match the
    attention of the encoder as exported (PyTorch's SDPA): those matrix products are quantized unfused."""
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    optimize_model(str(path), model_type="vit", opt_level=0).save_model_to_file(str(path))


@contextlib.contextmanager
def _root_logger_at_least(level: int):
    root = logging.getLogger()
    before = root.level
    root.setLevel(max(before, level))
    try:
        yield
    finally:
        root.setLevel(before)


def _quantize(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _root_logger_at_least(logging.WARNING):  # the quantizer logs a line per node to the root logger
        quantize_dynamic(
            path,
            path,
            op_types_to_quantize=list(INT8_OPS),
            per_channel=True,
            weight_type=QuantType.QInt8,
            reduce_range=True,
            # weights only: attention's activation products stay float32; the fused nodes (com.microsoft) have no
            # shape inference, so their outputs are declared float32
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def _int8(encoder: Path, decoder: Path) -> None:
    """Dynamic int8 quantization of the weights' matrix products, after the transformer fusions for the encoder
    (the decoder-step graph is this project's own: its matrix products are quantized as they are)."""
    _fuse_encoder(encoder)
    _quantize(encoder)
    _quantize(decoder)


@dataclass(frozen=True)
class Precision:
    name: str
    devices: tuple[str, ...]  # where the variant may be served
    convert: Callable[[Path, Path], None] | None  # (encoder.onnx, decoder.onnx) rewritten in place; None: fp32
    max_log_prob_error: float  # bound on |log p - log p(fp32)| along the fp32 greedy path
    min_token_agreement: float  # bound on the share of greedy tokens equal to fp32's, position by position
    cache_type: int = onnx.TensorProto.FLOAT  # of the decoder's caches (the server's device buffers)
    why_these_devices: str = ""

    def check_device(self, device: str) -> None:
        if device not in self.devices:
            raise ValueError(
                f"--precision {self.name} is for --device {' or '.join(self.devices)}, not {device} "
                f"({self.why_these_devices})"
            )


PRECISIONS = {
    "fp32": Precision("fp32", ("cpu", "cuda"), None, 0.0, 1.0),
    "fp16": Precision(
        "fp16",
        ("cuda",),
        _fp16,
        0.25,
        0.9,
        cache_type=onnx.TensorProto.FLOAT16,
        why_these_devices="on a CPU, ONNX Runtime runs most float16 kernels by casting back to float32: slower",
    ),
    "int8": Precision(
        "int8",
        ("cpu",),
        _int8,
        1.5,
        0.9,
        why_these_devices="dynamic quantization targets ONNX Runtime's CPU integer kernels; on a GPU, use fp16",
    ),
}


@dataclass(frozen=True)
class Agreement:
    max_log_prob_error: float
    token_agreement: float
    images: int
    tokens: int

    def as_dict(self) -> dict:
        return {
            "max_log_prob_error": round(self.max_log_prob_error, 5),
            "token_agreement": round(self.token_agreement, 4),
            "images": self.images,
            "tokens": self.tokens,
        }


def forced_log_probs(graphs: LocalGraphs, config: PipelineConfig, image: np.ndarray, tokens: list[int]) -> np.ndarray:
    """log_probs [len(tokens), vocab] of one image (uint8 pixels [1, ...]), fed `tokens` one after another."""
    fed = np.array([[config.generation.decoder_start_token_id, *tokens[:-1]]], dtype=np.int64)
    cross = graphs.cross_key_values(image)
    return teacher_forced_log_probs(graphs.step, cross, fed, config.decoder.cache_shape(1, 0))[0]


def compare(
    variant: LocalGraphs, reference: LocalGraphs, pixels: np.ndarray, config: PipelineConfig, max_new_tokens: int
) -> Agreement:
    """The variant against the fp32 graphs on `pixels` (one image per row)."""
    limits = np.full(len(pixels), max_new_tokens)
    expected = greedy_decode(reference.cross_key_values(pixels), limits, config, reference.step)
    got = greedy_decode(variant.cross_key_values(pixels), limits, config, variant.step)
    error, equal, total = 0.0, 0, 0
    for index, (want, have) in enumerate(zip(expected, got)):
        image = pixels[index : index + 1]
        forced = forced_log_probs(variant, config, image, want.token_ids)
        error = max(error, float(np.max(np.abs(forced - forced_log_probs(reference, config, image, want.token_ids)))))
        equal += sum(a == b for a, b in zip(want.token_ids, have.token_ids))
        total += max(len(want.token_ids), len(have.token_ids))
    return Agreement(error, equal / max(total, 1), len(pixels), total)


def validation_execution(device: str) -> Execution:
    """Where a variant is checked: on the GPU when the build is for CUDA and this machine can run it, else on
    the CPU (ONNX Runtime's CPU provider runs float16 graphs too, slowly: the figures hold, not the speed)."""
    if device == "cuda" and visible_gpus() and "CUDAExecutionProvider" in ort.get_available_providers():
        return Execution("cuda")
    return CPU


def convert_and_validate(
    precision: Precision, encoder: Path, decoder: Path, config: PipelineConfig, images: np.ndarray, device: str
) -> dict:
    """Turn the exported fp32 graphs into `precision`'s, then check them against the fp32 ones on `images`
    (uint8 pixels); returns the figures, or raises VariantValidationError past the variant's bounds."""
    if precision.convert is None:
        return {"precision": precision.name}
    with tempfile.TemporaryDirectory(prefix="trocr-fp32-") as folder:
        reference_paths = (Path(folder) / encoder.name, Path(folder) / decoder.name)
        for source, target in zip((encoder, decoder), reference_paths):
            shutil.copyfile(source, target)
        precision.convert(encoder, decoder)
        execution = validation_execution(device)
        reference = LocalGraphs(*reference_paths, execution=execution)
        agreement = compare(LocalGraphs(encoder, decoder, execution=execution), reference, images, config, 16)
    report = {
        "precision": precision.name,
        "validated_on": execution.device,
        **agreement.as_dict(),
        "bounds": {
            "max_log_prob_error": precision.max_log_prob_error,
            "token_agreement": precision.min_token_agreement,
        },
    }
    LOGGER.info(
        "%s vs fp32 on %d sample images (%s): max log-prob error %.4f (bound %.2f), token agreement %.1f%% (bound "
        "%.0f%%)",
        precision.name,
        agreement.images,
        execution.device,
        agreement.max_log_prob_error,
        precision.max_log_prob_error,
        100 * agreement.token_agreement,
        100 * precision.min_token_agreement,
    )
    if agreement.max_log_prob_error > precision.max_log_prob_error or (
        agreement.token_agreement < precision.min_token_agreement
    ):
        raise VariantValidationError(f"the {precision.name} graphs do not agree with fp32: {report}")
    return report
