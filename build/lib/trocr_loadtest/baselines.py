"""In-process baselines, measured on the same machine in the same run as the server.

- Hugging Face `transformers` `generate()` (PyTorch), at a given batch size;
- a plain in-process ONNX Runtime greedy loop on the project's own graphs (decode, preprocess, encode,
  greedy decode), one image at a time: the floor for the server's latency at concurrency 1;
- the encoder alone at batch 1 (the ceiling of any end-to-end figure on a CPU), ONNX Runtime's on the
  project's graph and PyTorch's (the model's encoder and its decoder's cross-attention projections, what the
  graph computes): which of the two kernels' sets is faster on this machine;
- the in-process ceiling: encoder at batch 1 plus the batched decoder steps of a batch of `batch` images,
  per image (what a perfect scheduler with no serving overhead would reach).

All runs generate a fixed number of tokens (end-of-sequence ignored), so random weights compare fairly.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trocr_build.greedy import LocalGraphs, graph_paths, greedy_decode
from trocr_loadtest.stats import percentile
from trocr_serving.engine.decoder_signature import DecoderStep, split_cross
from trocr_serving.execution import CPU, Execution
from trocr_serving.front.preprocessing import decode_image, pixels_of
from trocr_serving.pipeline_config import PipelineConfig


@dataclass(frozen=True)
class BaselineResult:
    system: str
    batch: int
    images_per_s: float
    latency_p50_s: float  # per call (a batch of `batch` images)
    latency_p95_s: float


def _timed(name: str, batch: int, run: Callable[[int], None], calls: int, warmup: int = 1) -> BaselineResult:
    for index in range(warmup):
        run(index)
    latencies = []
    for index in range(calls):
        started = time.perf_counter()
        run(index)
        latencies.append(time.perf_counter() - started)
    return BaselineResult(
        name, batch, batch * calls / sum(latencies), percentile(latencies, 50), percentile(latencies, 95)
    )


class RepositoryGraphs(LocalGraphs):
    """The exported graphs of a built repository, run in this process with ONNX Runtime."""

    def __init__(self, repository: Path, intra_op_threads: int = 0, execution: Execution = CPU):
        super().__init__(*graph_paths(repository), intra_op_threads, execution)
        self.config = PipelineConfig.load(repository / "trocr" / "1")

    def pixels(self, images: list[bytes]) -> np.ndarray:
        """The encoder's input, as the server's front makes it: decoded and resized, uint8."""
        return pixels_of([decode_image(data) for data in images], self.config.image)

    def transcribe(self, images: list[bytes], max_new_tokens: int) -> list:
        cross = self.cross_key_values(self.pixels(images))
        limits = np.full(len(images), max_new_tokens)
        return greedy_decode(cross, limits, self.config, self.step, ignore_eos=True)


def onnxruntime_loop(graphs: RepositoryGraphs, images: list[bytes], tokens: int, calls: int) -> BaselineResult:
    return _timed(
        "ONNX Runtime greedy loop, in-process (project graphs)",
        1,
        lambda i: graphs.transcribe([images[i % len(images)]], tokens),
        calls,
    )


def encoder_only(graphs: RepositoryGraphs, images: list[bytes], calls: int) -> BaselineResult:
    pixels = graphs.pixels(images)
    return _timed(
        "encoder alone, ONNX Runtime (ceiling for any end-to-end figure)",
        1,
        lambda i: graphs.cross_key_values(pixels[i % len(images)][None]),
        calls,
    )


def in_process_ceiling(graphs: RepositoryGraphs, images: list[bytes], tokens: int, batch: int, repeats: int = 3):
    """Encoder at batch 1 plus `tokens` decoder steps at batch `batch`, per image: (images/s, seconds/image)."""
    pixels = graphs.pixels(images)
    encoder_s = encoder_only(graphs, images, calls=max(4, repeats)).latency_p50_s
    rows = np.arange(batch) % len(images)
    cross = split_cross(np.concatenate([graphs.cross_key_values(pixels[r][None]) for r in rows]))
    shape = graphs.config.decoder
    best_s = float("inf")
    for _ in range(repeats):
        past = np.zeros(shape.cache_shape(batch, 0), dtype=np.float32)
        started = time.perf_counter()
        for position in range(tokens):
            _, past = graphs.step(DecoderStep.of(np.full(batch, 5), np.full(batch, position), past, cross).feed())
        best_s = min(best_s, time.perf_counter() - started)
    per_image_s = encoder_s + best_s / batch
    return 1.0 / per_image_s, per_image_s, encoder_s, best_s / tokens


def _torch_model(model_dir: str, device: str, dtype: str):
    import torch
    from transformers import VisionEncoderDecoderModel

    from trocr_build.reference import reference_processor

    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
    model = VisionEncoderDecoderModel.from_pretrained(model_dir).eval().to(device=device, dtype=torch_dtype)
    return model, reference_processor(model_dir), torch_dtype


def _pixel_values(processor, images: list[bytes]):
    from PIL import Image

    return processor(
        images=[Image.open(io.BytesIO(d)).convert("RGB") for d in images], return_tensors="pt"
    ).pixel_values


def torch_encoder_only(model_dir: str, images: list[bytes], calls: int, device: str = "cpu") -> BaselineResult:
    """PyTorch's encoder at batch 1 in fp32, with the decoder's cross-attention key and value projections (what
    encoder.onnx computes: trocr_build.graphs.EncoderGraph)."""
    import torch

    model, processor, _ = _torch_model(model_dir, device, "fp32")
    pixel_values = _pixel_values(processor, images).to(device)
    project = getattr(model, "enc_to_dec_proj", None)
    layers = model.decoder.model.decoder.layers

    def run(index: int) -> None:
        with torch.inference_mode():
            hidden = model.encoder(pixel_values=pixel_values[index % len(images)][None]).last_hidden_state
            hidden = project(hidden) if project is not None else hidden
            keys_values = [
                p(hidden) for layer in layers for p in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj)
            ]
            keys_values[-1].sum().item()  # waits for the device

    return _timed(f"encoder alone, PyTorch {torch.__version__.split('+')[0]}", 1, run, calls)


def transformers_generate(
    model_dir: str, images: list[bytes], tokens: int, batch: int, calls: int, device: str = "cpu", dtype: str = "fp32"
):
    """Hugging Face generate() on `device` ("cpu" or "cuda"), weights and inputs in `dtype` ("fp32" or "fp16")."""
    import torch

    model, processor, torch_dtype = _torch_model(model_dir, device, dtype)

    def run(index: int) -> None:
        chosen = [images[(index * batch + j) % len(images)] for j in range(batch)]
        with torch.inference_mode():
            pixel_values = _pixel_values(processor, chosen).to(device=device, dtype=torch_dtype)
            out = model.generate(
                pixel_values, max_new_tokens=tokens, min_new_tokens=tokens, num_beams=1, do_sample=False
            )
            out.tolist()  # waits for the device

    version = torch.__version__.split("+")[0]
    where = "" if device == "cpu" else f", {device} {dtype}"
    return _timed(f"transformers generate() (PyTorch {version}{where})", batch, run, calls)


def optimum_generate(
    model_dir: str, cache_dir: Path, images: list[bytes], tokens: int, batch: int, calls: int, device: str = "cpu"
):
    """optimum's ORTModelForVision2Seq (its own export: encoder + merged decoder with past) on ONNX Runtime."""
    from optimum.onnxruntime import ORTModelForVision2Seq

    from trocr_build.reference import reference_processor

    exported = cache_dir / f"optimum-{Path(model_dir).name}"
    if not (exported / "config.json").exists():
        ORTModelForVision2Seq.from_pretrained(model_dir, export=True).save_pretrained(exported)
    provider = "CPUExecutionProvider" if device == "cpu" else "CUDAExecutionProvider"
    model = ORTModelForVision2Seq.from_pretrained(exported, provider=provider)
    processor = reference_processor(model_dir)

    def run(index: int) -> None:
        chosen = [images[(index * batch + j) % len(images)] for j in range(batch)]
        pixel_values = _pixel_values(processor, chosen)
        model.generate(pixel_values, max_new_tokens=tokens, min_new_tokens=tokens, num_beams=1, do_sample=False)

    import onnxruntime

    return _timed(f"optimum ORTModelForVision2Seq (ONNX Runtime {onnxruntime.__version__})", batch, run, calls)
