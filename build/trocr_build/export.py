"""Export the encoder and decoder-step graphs to ONNX and check them against PyTorch.

Three checks, like optimum's validate step, each reporting the max abs diff per output and failing above a
tolerance:
1. each graph against its torch module on random inputs (ragged cache: padded rows, different positions);
2. the exported pair, stepped token by token, against the Hugging Face model's own forward pass;
3. the server's images (resized to uint8, then the encoder graph's normalisation) against the model's image
   processor on the sample images.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from transformers import VisionEncoderDecoderModel

from trocr_build.graphs import DecoderStepGraph, EncoderGraph, PixelNormalization
from trocr_build.greedy import LocalGraphs, teacher_forced_log_probs
from trocr_serving import graph_names as names
from trocr_serving.front.preprocessing import pixels_of
from trocr_serving.onnx_runtime import GraphRunner
from trocr_serving.pipeline_config import DecoderShape, ImageConfig

LOGGER = logging.getLogger(__name__)
OPSET = 17
# The server's pixel_values against the image processor's: the same arithmetic, so equal but for the last bit.
PIXEL_TOLERANCE = 1e-6


class ExportValidationError(RuntimeError):
    pass


def image_size(model: VisionEncoderDecoderModel) -> tuple[int, int]:
    """(height, width) of the images the model's encoder takes."""
    size = model.config.encoder.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def decoder_shape(model: VisionEncoderDecoderModel) -> DecoderShape:
    """The dimensions the graphs and the server's buffers follow, read from the model (the encoder's sequence
    length by running it once on a blank image)."""
    decoder = model.config.decoder
    with torch.no_grad():
        seq_len = model.encoder(torch.zeros(1, 3, *image_size(model))).last_hidden_state.shape[1]
    return DecoderShape(
        num_layers=decoder.decoder_layers,
        num_heads=decoder.decoder_attention_heads,
        head_dim=decoder.d_model // decoder.decoder_attention_heads,
        vocab_size=decoder.vocab_size,
        encoder_seq_len=seq_len,
        max_positions=decoder.max_position_embeddings,
    )


def _decoder_example(shape: DecoderShape, batch: int, past_len: int, seed: int) -> dict[str, torch.Tensor]:
    """Random decoder inputs with a ragged cache: each row has its own length (padded on the right), and
    continues a row of a larger cache (more rows, more positions), like beam parents and rows that moved."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, past_len + 1, (batch,), generator=generator)
    mask = (torch.arange(past_len + 1)[None, :] < lengths[:, None]).to(torch.int64)
    mask[:, past_len] = 1
    cache_rows = batch + 1
    return {
        names.INPUT_IDS: torch.randint(0, shape.vocab_size, (batch, 1), generator=generator),
        names.POSITION_IDS: lengths[:, None].clone(),
        names.ATTENTION_MASK: mask,
        names.PAST_KEY_VALUES: torch.randn(shape.cache_shape(cache_rows, past_len + 2), generator=generator),
        names.PAST_ROWS: torch.randint(0, cache_rows, (batch,), generator=generator),
        **{
            name: torch.randn((batch, shape.num_heads, shape.encoder_seq_len, shape.head_dim), generator=generator)
            for name in names.cross_inputs(shape.num_layers)
        },
    }


def _export(module: torch.nn.Module, example: dict[str, torch.Tensor], output_names, dynamic_axes, path: Path):
    input_names = list(example)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that handles these graphs in torch 2.13;
        # its tracer warns about shape checks inside the HF modules, which are constants for a given model.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        _torchscript_export(module, example, input_names, output_names, dynamic_axes, path)


def _torchscript_export(module, example, input_names, output_names, dynamic_axes, path: Path) -> None:
    torch.onnx.export(
        module,
        tuple(example.values()),
        str(path),
        input_names=input_names,
        output_names=list(output_names),
        dynamic_axes=dynamic_axes,
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )


def _compare(label: str, expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], atol: float) -> dict:
    """Max abs diff per output; fails above `atol` scaled by the output's magnitude (at least 1)."""
    report, failures = {}, []
    for name, reference in expected.items():
        got = actual[name]
        if got.shape != reference.shape:
            failures.append(f"{name}: shape {got.shape} != {reference.shape}")
            continue
        diff = float(np.max(np.abs(got - reference))) if reference.size else 0.0
        scale = max(1.0, float(np.max(np.abs(reference)))) if reference.size else 1.0
        report[name] = diff
        LOGGER.info("%s: %s max abs diff %.2e (tolerance %.1e)", label, name, diff, atol * scale)
        if not diff <= atol * scale:
            failures.append(
                f"{name}: max abs diff {diff:.3e} > {atol * scale:.1e} ({atol:.0e} x magnitude {scale:.1f})"
            )
    if failures:
        raise ExportValidationError(f"{label} does not match PyTorch: " + "; ".join(failures))
    return report


def _random_pixels(rows: int, image: ImageConfig, generator: torch.Generator) -> torch.Tensor:
    height, width = image.height, image.width
    return torch.randint(0, 256, (rows, 3, height, width), generator=generator, dtype=torch.uint8)


def export_encoder(model: VisionEncoderDecoderModel, image: ImageConfig, path: Path, atol: float) -> dict:
    graph = EncoderGraph(model, image).eval()
    example = {names.PIXELS: _random_pixels(2, image, torch.Generator().manual_seed(0))}
    dynamic_axes = {
        names.PIXELS: {0: "batch"},
        **{name: {0: "batch"} for name in names.ENCODER_OUTPUTS},
    }
    _export(graph, example, names.ENCODER_OUTPUTS, dynamic_axes, path)
    check = {names.PIXELS: _random_pixels(3, image, torch.Generator().manual_seed(1))}
    with torch.no_grad():
        expected = dict(zip(names.ENCODER_OUTPUTS, (t.numpy() for t in graph(**check))))
    actual = GraphRunner(path).run({k: v.numpy() for k, v in check.items()})
    return _compare("encoder.onnx", expected, actual, atol)


def export_decoder(model: VisionEncoderDecoderModel, shape: DecoderShape, path: Path, atol: float) -> dict:
    graph = DecoderStepGraph(model).eval()
    example = _decoder_example(shape, batch=2, past_len=3, seed=0)
    dynamic_axes = {
        names.INPUT_IDS: {0: "batch"},
        names.POSITION_IDS: {0: "batch"},
        names.ATTENTION_MASK: {0: "batch", 1: "past_len_plus_one"},
        names.PAST_KEY_VALUES: {0: "cache_rows", 4: "cache_len"},
        names.PAST_ROWS: {0: "batch"},
        **{name: {0: "batch"} for name in names.cross_inputs(shape.num_layers)},
        names.LOG_PROBS: {0: "batch"},
        names.PRESENT_KEY_VALUES: {0: "batch", 4: "past_len_plus_one"},
    }
    _export(graph, example, names.DECODER_STEP_OUTPUTS, dynamic_axes, path)
    append_top_k(path)
    runner = GraphRunner(path)
    report = {}
    for batch, past_len, top_k in ((3, 7, 8), (1, 0, 1)):
        check = _decoder_example(shape, batch=batch, past_len=past_len, seed=batch)
        with torch.no_grad():
            expected = dict(zip(names.DECODER_STEP_OUTPUTS, (t.numpy() for t in graph(*check.values()))))
        expected[names.TOP_LOG_PROBS] = -np.sort(-expected[names.LOG_PROBS], axis=-1)[:, :top_k]
        feed = {k: v.numpy() for k, v in check.items()} | {names.TOP_K: np.array([top_k], dtype=np.int64)}
        actual = runner.run(feed)
        label = f"decoder.onnx (batch {batch}, cache {past_len}, top {top_k})"
        report[f"batch{batch}_past{past_len}"] = _compare(label, expected, actual, atol)
        # The ids are the graph's own ranking: exactly a stable argsort of its log_probs.
        ranking = np.argsort(-actual[names.LOG_PROBS], axis=-1, kind="stable")[:, :top_k]
        if not np.array_equal(actual[names.TOP_IDS], ranking):
            raise ExportValidationError(f"{label}: top_ids differ from a stable argsort of log_probs")
    return report


def append_top_k(path: Path) -> None:
    """Add ONNX TopK over the log-probabilities (input `top_k`, outputs `top_log_probs` and `top_ids`), so that
    a step gives the searches rows x k candidates instead of rows x vocabulary. TopK sorts the largest first
    and equal values by index, like the stable argsort the searches replicate from transformers."""
    model = onnx.load(str(path))
    graph = model.graph
    graph.input.append(onnx.helper.make_tensor_value_info(names.TOP_K, onnx.TensorProto.INT64, [1]))
    graph.node.append(
        onnx.helper.make_node(
            "TopK",
            [names.LOG_PROBS, names.TOP_K],
            [names.TOP_LOG_PROBS, names.TOP_IDS],
            name="top_k",
            axis=-1,
            largest=1,
            sorted=1,
        )
    )
    graph.output.extend(
        [
            onnx.helper.make_tensor_value_info(names.TOP_LOG_PROBS, onnx.TensorProto.FLOAT, ["batch", "top_k"]),
            onnx.helper.make_tensor_value_info(names.TOP_IDS, onnx.TensorProto.INT64, ["batch", "top_k"]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_row_copy(path: Path, element_type: int = onnx.TensorProto.FLOAT) -> None:
    """row_copy.onnx: one Expand, with which the server's model runner fills rows of its device buffers (an
    image's keys/values into a beam group's rows, a row into another's place) without leaving the device.
    `element_type`: that of the decoder's cross-attention inputs."""
    tensor = onnx.helper.make_tensor_value_info
    rows = ["rows", "heads", "encoder_seq_len", "head_dim"]  # a decoder cross-attention input's layout
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Expand", [names.ROW_COPY_SOURCE, names.ROW_COPY_SHAPE], [names.ROW_COPY_TARGET])],
        "row_copy",
        [
            tensor(names.ROW_COPY_SOURCE, element_type, ["one_or_rows", *rows[1:]]),
            tensor(names.ROW_COPY_SHAPE, onnx.TensorProto.INT64, [len(rows)]),
        ],
        [tensor(names.ROW_COPY_TARGET, element_type, rows)],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def validate_against_reference(
    model: VisionEncoderDecoderModel,
    shape: DecoderShape,
    image: ImageConfig,
    encoder_path: Path,
    decoder_path: Path,
    atol: float,
) -> dict:
    """Step the exported graphs along fixed token sequences and compare with the HF model's forward pass."""
    steps = min(6, shape.max_positions)
    generator = torch.Generator().manual_seed(2)
    pixels = _random_pixels(2, image, generator)
    tokens = torch.randint(0, shape.vocab_size, (2, steps), generator=generator)
    tokens[:, 0] = model.config.decoder_start_token_id
    with torch.no_grad():
        logits = model(pixel_values=PixelNormalization(image)(pixels), decoder_input_ids=tokens).logits
    expected = torch.log_softmax(logits, dim=-1).numpy()
    graphs = LocalGraphs(encoder_path, decoder_path)
    cross = graphs.cross_key_values(pixels.numpy())
    got = teacher_forced_log_probs(graphs.step, cross, tokens.numpy(), shape.cache_shape(2, 0))
    return _compare(
        "encoder.onnx + decoder.onnx vs Hugging Face forward",
        {"log_probs": expected},
        {"log_probs": got},
        atol,
    )


def validate_pixels(image_processor, image: ImageConfig, images: list) -> dict:
    """The server's pixel_values (resized to uint8 here, normalised by the encoder graph's first nodes) against
    the model's image processor, on RGB images."""
    expected = image_processor(images=images, return_tensors="np").pixel_values
    with torch.no_grad():
        got = PixelNormalization(image)(torch.from_numpy(pixels_of(images, image))).numpy()
    return _compare(
        "pixels + normalisation vs the image processor",
        {"pixel_values": expected},
        {"pixel_values": got},
        PIXEL_TOLERANCE,
    )
