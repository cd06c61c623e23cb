"""Precision variants: the fp16 build (for CUDA, built and checked on this CPU machine), its graphs' types, its
check against fp32 and that the check fails past its bounds, and its graphs in the server's decoder runner; the
int8 conversion (fusions, then quantization) and its check."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from tests.conftest import Built
from tests.reference import reference_generate
from tests.unit.test_continuous_batching import Harness, images
from trocr_build.greedy import LocalGraphs, graph_paths, greedy_decode
from trocr_build.repository import ServingOptions, build_repository
from trocr_build.variants import ENCODER_NORMALIZATION_NODES, PRECISIONS, VariantValidationError, convert_and_validate
from trocr_client.images import sample_paths
from trocr_loadtest.variant_table import encoder_speeds
from trocr_serving import graph_names as names
from trocr_serving.front.preprocessing import decode_image, pixels_of
from trocr_serving.pipeline_config import PipelineConfig

FLOAT, FLOAT16, UINT8 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.UINT8


@pytest.fixture(scope="module")
def built_fp16(built_tiny, tmp_path_factory) -> Built:
    repository = tmp_path_factory.mktemp("fp16")
    options = ServingOptions(device="cuda", precision="fp16")
    info = build_repository(
        "random:tiny", repository, cache_dir=tmp_path_factory.getbasetemp() / "models", options=options
    )
    return Built(repository, built_tiny.model, built_tiny.processor, info)


def io_types(path) -> dict[str, int]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {value.name: value.type.tensor_type.elem_type for value in [*graph.input, *graph.output]}


def test_the_fp16_build_is_checked_against_fp32_on_the_samples(built_fp16):
    variant = built_fp16.info["variant"]
    assert (
        variant["precision"] == "fp16" and variant["validated_on"] == "cpu" and variant["images"] == len(sample_paths())
    )
    assert 0 < variant["max_log_prob_error"] <= PRECISIONS["fp16"].max_log_prob_error
    assert variant["token_agreement"] >= PRECISIONS["fp16"].min_token_agreement and variant["tokens"] > 0


def test_fp16_graphs_keep_float32_where_the_serving_code_reads_them(built_fp16):
    encoder_path = graph_paths(built_fp16.repository)[0]
    # The encoder writes float16 keys/values, bound as they are into the decoder's float16 buffers ...
    assert io_types(encoder_path) == {names.PIXELS: UINT8, names.CROSS_KEY_VALUES: FLOAT16}
    # ... and normalises the pixels in float32, as the image processor: a cast to float16 follows the division.
    graph = onnx.load(str(encoder_path)).graph
    (divide,) = [
        node for node in graph.node if node.name.startswith(ENCODER_NORMALIZATION_NODES) and node.op_type == "Div"
    ]
    (consumer,) = [node for node in graph.node if divide.output[0] in node.input]
    assert consumer.op_type == "Cast" and consumer.attribute[0].i == FLOAT16
    folder = built_fp16.repository / "scheduler" / "1"
    decoder = io_types(folder / names.DECODER_ONNX)
    assert decoder[names.TOP_LOG_PROBS] == decoder[names.LOG_PROBS] == FLOAT
    halves = [names.PAST_KEY_VALUES, names.PRESENT_KEY_VALUES, *names.cross_inputs(2)]
    assert [decoder[name] for name in halves] == [FLOAT16] * len(halves)
    assert io_types(folder / names.ROW_COPY_ONNX)[names.ROW_COPY_TARGET] == FLOAT16


def test_the_fp16_graphs_decode_in_the_runner_like_generate(built_fp16):
    harness = Harness(built_fp16)
    assert harness.runner.dtype == np.float16 and harness.runner.caches[0].dtype == np.float16
    data = images(6)
    groups = harness.groups(data, 12)
    harness.scheduler.submit(groups)
    harness.run()
    references = reference_generate(built_fp16.model, built_fp16.processor, data, 12)
    pairs = [(g.search.result().token_ids, r.token_ids) for g, r in zip(groups, references)]
    agreement = sum(a == b for got, want in pairs for a, b in zip(got, want)) / sum(len(want) for _, want in pairs)
    assert agreement >= PRECISIONS["fp16"].min_token_agreement


def test_a_variant_past_its_bounds_fails_the_build(built_tiny, tmp_path):
    folder = built_tiny.repository
    encoder, decoder = tmp_path / names.ENCODER_ONNX, tmp_path / names.DECODER_ONNX
    encoder.write_bytes(graph_paths(folder)[0].read_bytes())
    decoder.write_bytes((folder / "scheduler" / "1" / names.DECODER_ONNX).read_bytes())
    config = PipelineConfig.load(folder / "trocr" / "1")
    pixels = pixels_of([decode_image(image) for image in images(2)], config.image)
    strict = dataclasses.replace(PRECISIONS["fp16"], max_log_prob_error=1e-6)
    with pytest.raises(VariantValidationError, match="the fp16 graphs do not agree with fp32"):
        convert_and_validate(strict, encoder, decoder, config, pixels, "cuda")


def test_fp16_is_refused_for_the_cpu_with_the_reason():
    with pytest.raises(ValueError, match="--precision fp16 is for --device cuda, not cpu"):
        ServingOptions(device="cpu", precision="fp16")


def graph_copies(built: Built, folder) -> tuple:
    encoder, decoder = folder / names.ENCODER_ONNX, folder / names.DECODER_ONNX
    encoder.write_bytes(graph_paths(built.repository)[0].read_bytes())
    decoder.write_bytes((built.repository / "scheduler" / "1" / names.DECODER_ONNX).read_bytes())
    return encoder, decoder


def op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_int8_graphs_are_fused_then_quantized_with_float32_interfaces(built_tiny, tmp_path):
    encoder, decoder = graph_copies(built_tiny, tmp_path)
    PRECISIONS["int8"].convert(encoder, decoder)
    # LayerNorm-with-residual and bias-with-GELU fused; ONNX Runtime's multi-head Attention fusion does not
    # match the attention of the encoder as exported (PyTorch's SDPA)
    assert {"SkipLayerNormalization", "BiasGelu", "DynamicQuantizeLinear", "MatMulInteger"} <= op_types(encoder)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= op_types(decoder)
    assert io_types(encoder) == {names.PIXELS: UINT8, names.CROSS_KEY_VALUES: FLOAT}
    assert FLOAT16 not in io_types(decoder).values()
    config = PipelineConfig.load(built_tiny.repository / "trocr" / "1")
    pixels = pixels_of([decode_image(image) for image in images(2)], config.image)
    graphs = LocalGraphs(encoder, decoder)  # ONNX Runtime runs them
    assert len(greedy_decode(graphs.cross_key_values(pixels), np.full(2, 4), config, graphs.step)) == 2


def test_int8_of_random_weights_fails_its_check_against_fp32(built_tiny, tmp_path):
    """Random weights (peaked attention, no trained structure) move at random under quantization: the build's
    check is what keeps such a variant from being served."""
    encoder, decoder = graph_copies(built_tiny, tmp_path)
    config = PipelineConfig.load(built_tiny.repository / "trocr" / "1")
    pixels = pixels_of([decode_image(image) for image in images(4)], config.image)
    with pytest.raises(VariantValidationError, match="the int8 graphs do not agree with fp32"):
        convert_and_validate(PRECISIONS["int8"], encoder, decoder, config, pixels, "cpu")


def test_int8_of_the_trained_model_passes_its_check(built_synthetic, tmp_path):
    """The shipped synthetic:small quantizes within its bounds. With full 8-bit weights it did not on AVX2 (max
    log-prob error 2.3, agreement 81%): without VNNI, int16 sums of uint8 x int8 products saturate."""
    encoder, decoder = graph_copies(built_synthetic, tmp_path)
    config = PipelineConfig.load(built_synthetic.repository / "trocr" / "1")
    pixels = pixels_of([decode_image(image) for image in images(6)], config.image)
    report = convert_and_validate(PRECISIONS["int8"], encoder, decoder, config, pixels, "cpu")
    assert report["images"] == 6 and report["token_agreement"] >= 0.9 and report["max_log_prob_error"] <= 1.5


def test_int8_is_refused_for_cuda_with_the_reason():
    with pytest.raises(ValueError, match="--precision int8 is for --device cpu, not cuda .*use fp16"):
        ServingOptions(device="cuda", precision="int8")


def test_the_encoder_timing_converts_and_runs_each_precision(built_tiny):
    table = encoder_speeds(built_tiny.repository, ["fp32", "int8"], [1, 2], repeats=1)
    assert table[0] == "| encoder | fp32 | int8 | int8 speed-up |" and len(table) == 4
    assert table[2].startswith("| batch 1 | ") and table[3].startswith("| batch 2 | ") and table[3].endswith("x |")
