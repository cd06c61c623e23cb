"""The servers a repository is built for (`trocr-build --target`), and the configs of the models that differ.

- `pip`: the pip-installed `tritonserver` (Python backend only). The encoder runs ONNX Runtime inside a Python
  model; the scheduler runs the decoder graph from its own folder.
- `triton-container`: NVIDIA's Triton container, which has the onnxruntime backend. The encoder is a native
  onnxruntime model (Triton's dynamic batcher, CUDA or TensorRT on a GPU), and the decoder step graph is a
  native model too, `decoder`, for callers that run their own decoding loop; the scheduler runs the same file.

Native models' tensors are read from the graph as ONNX Runtime reads it (names, element types, shapes after its
shape inference: what the onnxruntime backend checks a config against), so a config cannot drift from the export.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from trocr_build.model_config import Accelerator, DynamicBatching, ModelConfig, Tensor
from trocr_serving import graph_names as names

TARGETS = ("pip", "triton-container")
DECODER_MODEL = "decoder"  # the native decoder step model of the container target
ENCODER_MODEL = "encoder"  # the native encoder model of the container target
# The encoder's batches on a GPU (the scheduler's feeder already sends what accumulated; Triton's batcher
# merges calls from elsewhere), and TensorRT's workspace.
PREFERRED_ENCODER_BATCHES = (4, 8, 16)
TENSORRT_WORKSPACE_BYTES = 2 * 1024**3
TENSORRT_CACHE_DIR = "/tmp/trocr-tensorrt-cache"  # engines built at the first load, reused by later loads

ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
}


def decoder_home(target: str) -> str:
    """The model folder that holds decoder.onnx (and row_copy.onnx beside it)."""
    return DECODER_MODEL if target == "triton-container" else "scheduler"


def encoder_home(target: str) -> str:
    """The model folder that holds encoder.onnx: the native `encoder` model's of the container target, which the
    scheduler's engine opens too (one file), else the scheduler's own (the pip target has no encoder model)."""
    return ENCODER_MODEL if target == "triton-container" else "scheduler"


def graph_tensors(values: list, batched: bool) -> tuple[Tensor, ...]:
    """ONNX Runtime's NodeArgs as config tensors (a named dimension is variable: -1); with `batched`, the
    first dimension is Triton's batch."""
    tensors = []
    for value in values:
        dims = tuple(d if isinstance(d, int) else -1 for d in value.shape)
        tensors.append(Tensor(value.name, ORT_TYPES[value.type], dims[1:] if batched else dims))
    return tuple(tensors)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def native_models(
    encoder_path: Path,
    decoder_path: Path,
    encoder_max_batch_size: int,
    intra_op_threads: int,
    placement: dict,
    tensorrt_precision: str | None,
) -> list[ModelConfig]:
    """The container target's native models: `encoder` (batched by Triton) and `decoder` (one step; its cache
    rows and top_k do not batch, so Triton does not batch it). `tensorrt_precision` ("FP16" or "FP32") puts
    the encoder under ONNX Runtime's TensorRT execution provider; None keeps CUDA (or the CPU)."""
    common = {
        "backend": "onnxruntime",
        "parameters": {"intra_op_thread_count": str(intra_op_threads)},
        **placement,
    }
    accelerators = ()
    if tensorrt_precision is not None:
        accelerators = (
            Accelerator(
                "tensorrt",
                {
                    "precision_mode": tensorrt_precision,
                    "max_workspace_size_bytes": str(TENSORRT_WORKSPACE_BYTES),
                    "trt_engine_cache_enable": "1",
                    "trt_engine_cache_path": TENSORRT_CACHE_DIR,
                },
            ),
        )
    encoder, decoder = _session(encoder_path), _session(decoder_path)
    return [
        ModelConfig(
            name=ENCODER_MODEL,
            max_batch_size=encoder_max_batch_size,
            inputs=graph_tensors(encoder.get_inputs(), batched=True),
            outputs=graph_tensors(encoder.get_outputs(), batched=True),
            default_model_filename=names.ENCODER_ONNX,
            dynamic_batching=DynamicBatching(
                preferred_batch_sizes=tuple(s for s in PREFERRED_ENCODER_BATCHES if s <= encoder_max_batch_size)
            ),
            gpu_accelerators=accelerators,
            **common,
        ),
        ModelConfig(
            name=DECODER_MODEL,
            max_batch_size=0,
            inputs=graph_tensors(decoder.get_inputs(), batched=False),
            outputs=graph_tensors(decoder.get_outputs(), batched=False),
            default_model_filename=names.DECODER_ONNX,
            **common,
        ),
    ]
