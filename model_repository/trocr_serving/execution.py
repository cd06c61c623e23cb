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

    def prepare(self) -> None:
        """Before a session: load pip's CUDA libraries, and fail with a message naming what is missing."""
        if self.device == "cpu":
            return
        import onnxruntime as ort

        require_gpus()
        if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21: CUDA and cuDNN from the nvidia-* wheels
            ort.preload_dlls()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DeviceUnavailableError(
                "this repository was built for CUDA, but the installed onnxruntime has no CUDA execution provider "
                f"({', '.join(ort.get_available_providers())}): install the project with '.[serve-gpu]' "
                "(onnxruntime-gpu) instead of '.[serve]'"
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
