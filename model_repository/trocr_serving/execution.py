"""Where ONNX Runtime runs: the CPU, or one CUDA GPU. The one place that states the execution providers and
their options, and that checks what a CUDA build needs before anything loads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

LOGGER = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
# Triton's instance group kind for each device (the build writes it; a model instance reads it back).
INSTANCE_KINDS = {"cpu": "KIND_CPU", "cuda": "KIND_GPU"}
NVIDIA_GPUS_DIR = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the driver sees

# CUDA execution provider options: grow the memory arena by what is asked (the caches are allocated once),
# pick convolution algorithms by heuristic (the encoder's patch embedding is the only convolution), and copy
# on the default stream so inputs bound from numpy are ready before the kernels that read them.
CUDA_PROVIDER_OPTIONS = {
    "arena_extend_strategy": "kSameAsRequested",
    "cudnn_conv_algo_search": "HEURISTIC",
    "do_copy_in_default_stream": "1",
}


# ONNX Runtime's TensorRT provider for the engine's encoder session (an option of a CUDA build): its workspace,
# and the engines it builds at the first load, reused by later loads.
TENSORRT_WORKSPACE_BYTES = 2 * 1024**3
TENSORRT_CACHE_DIR = "/tmp/trocr-tensorrt-cache"


# What to do when a CUDA build's session asks for a provider the installed onnxruntime lacks.
MISSING_PROVIDER_HINTS = {
    "CUDAExecutionProvider": "the repository was built for CUDA: install the project with '.[serve-gpu]' "
    "(onnxruntime-gpu) instead of '.[serve]'",
    "TensorrtExecutionProvider": "TensorRT's libraries must be installed (NVIDIA's containers have them), or "
    "rebuild without --tensorrt",
}


class DeviceUnavailableError(RuntimeError):
    """A CUDA build on a machine without what it needs; the message names what is missing."""


@dataclass(frozen=True)
class Execution:
    device: str = "cpu"  # one of DEVICES
    device_id: int = 0  # the GPU, for "cuda"

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")

    @classmethod
    def of_instance(cls, args: dict) -> Execution:
        """The device of a Triton model instance (the `initialize` args of a Python-backend model)."""
        if args.get("model_instance_kind") == "GPU":
            return cls("cuda", int(args.get("model_instance_device_id", 0)))
        return cls("cpu")

    @property
    def ort_device(self) -> tuple[str, int]:
        """ONNX Runtime's name and id of the device (OrtValue and I/O binding arguments)."""
        return (self.device, self.device_id if self.device == "cuda" else 0)

    def providers(self) -> list:
        if self.device == "cpu":
            return ["CPUExecutionProvider"]
        return [("CUDAExecutionProvider", {"device_id": str(self.device_id), **CUDA_PROVIDER_OPTIONS})]

    def tensorrt_providers(self, fp16: bool, input_name: str, shapes: tuple[tuple[int, ...], ...]) -> list:
        """ONNX Runtime's TensorRT provider ahead of CUDA's (which runs the nodes TensorRT does not take), with one
        optimisation profile for `input_name`: its smallest, typical and largest shapes."""
        if self.device != "cuda":
            raise ValueError("TensorRT needs device cuda")
        smallest, typical, largest = (f"{input_name}:{'x'.join(map(str, shape))}" for shape in shapes)
        options = {
            "device_id": str(self.device_id),
            "trt_fp16_enable": str(fp16),
            "trt_max_workspace_size": str(TENSORRT_WORKSPACE_BYTES),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": TENSORRT_CACHE_DIR,
            "trt_profile_min_shapes": smallest,
            "trt_profile_opt_shapes": typical,
            "trt_profile_max_shapes": largest,
        }
        return [("TensorrtExecutionProvider", options), *self.providers()]

    def prepare(self, providers: list | None = None) -> None:
        """Before a session with `providers` (default: this device's; names or (name, options) pairs): load pip's
        CUDA libraries, and fail with a message naming the first provider the installed onnxruntime lacks."""
        if self.device == "cpu":
            return
        import onnxruntime as ort

        require_gpus()
        if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21: CUDA and cuDNN from the nvidia-* wheels
            ort.preload_dlls()
        available = ort.get_available_providers()
        names = [provider[0] if isinstance(provider, tuple) else provider for provider in providers or self.providers()]
        for name in names:
            if name not in available:
                raise DeviceUnavailableError(
                    f"this repository asks for ONNX Runtime's {name}, which the installed onnxruntime cannot load "
                    f"(it has {', '.join(available)}): {MISSING_PROVIDER_HINTS[name]}"
                )


CPU = Execution("cpu")


def visible_gpus() -> int:
    return len(list(NVIDIA_GPUS_DIR.iterdir())) if NVIDIA_GPUS_DIR.is_dir() else 0


def require_gpus(ids: tuple[int, ...] = (0,)) -> None:
    count = visible_gpus()
    if count == 0:
        raise DeviceUnavailableError(
            f"this repository was built for CUDA (GPUs {list(ids)}), but this machine has no NVIDIA GPU "
            f"(the driver lists none in {NVIDIA_GPUS_DIR}): rebuild it with `trocr-build --device cpu`, or serve "
            "it on a GPU machine"
        )
    missing = [i for i in ids if i >= count]
    if missing:
        raise DeviceUnavailableError(
            f"this repository was built for GPUs {list(ids)}, but this machine has {count} (no GPU {missing}): "
            "rebuild it with `trocr-build --gpus` naming GPUs it has"
        )
