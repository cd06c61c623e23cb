"""The engine's encoder: UINT8 pixels in from the host, cross-attention keys/values out into device memory.

The output of a call is written by ONNX Runtime's I/O binding into a staging buffer allocated once for the
largest encoder batch; the model runner copies each image's keys/values from there into its rows' buffers,
device to device (trocr_serving.engine.model_runner). Nothing of an image comes back to the host.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from trocr_serving import graph_names as names
from trocr_serving.engine.device_buffer import DeviceBuffer
from trocr_serving.execution import Execution
from trocr_serving.onnx_runtime import create_session, float_dtype
from trocr_serving.pipeline_config import DecoderShape, PipelineConfig

TENSORRT_OFF = "off"
TENSORRT_PRECISIONS = ("fp32", "fp16")


class EncoderError(RuntimeError):
    """An encoder call failed: the images of that call fail, the running rows go on."""


class BoundEncoder:
    def __init__(self, session: ort.InferenceSession, shape: DecoderShape, max_batch: int, execution: Execution):
        self.session = session
        self.shape = shape
        self.max_batch = max_batch
        self.dtype = float_dtype(session, names.CROSS_KEY_VALUES)  # float16 in the fp16 variant, as the caches
        self.image_elements = int(np.prod(shape.cross_shape(1)))
        self.staging = DeviceBuffer(max_batch * self.image_elements, self.dtype, execution)
        self.binding = session.io_binding()

    @classmethod
    def open(
        cls,
        path: Path,
        pipeline: PipelineConfig,
        max_batch: int,
        execution: Execution,
        threads: int = 0,
        tensorrt: str = TENSORRT_OFF,
    ) -> BoundEncoder:
        """The encoder session of `path` on `execution`'s device; `tensorrt` ("fp32" or "fp16", CUDA only) puts
        it under ONNX Runtime's TensorRT provider, with a profile for 1 to max_batch images."""
        providers = None
        if tensorrt != TENSORRT_OFF:
            image = (3, pipeline.image.height, pipeline.image.width)
            shapes = ((1, *image), (min(8, max_batch), *image), (max_batch, *image))
            providers = execution.tensorrt_providers(tensorrt == "fp16", names.PIXELS, shapes)
        # Not spinning: the front instances' processes share the cores, and an idle spinning pool steals them.
        session = create_session(path, threads, spinning=False, execution=execution, providers=providers)
        return cls(session, pipeline.decoder, max_batch, execution)

    def encode(self, pixels: np.ndarray) -> DeviceBuffer:
        """UINT8 pixels [images, 3, height, width] (at most max_batch) -> the staging buffer, holding image i's
        keys/values [layers, 2, heads, encoder_seq_len, head_dim] at element i x image_elements (until the next
        call)."""
        if not 1 <= len(pixels) <= self.max_batch:
            raise EncoderError(f"{len(pixels)} images in one encoder call: 1..{self.max_batch}")
        binding = self.binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_cpu_input(names.PIXELS, np.ascontiguousarray(pixels, dtype=np.uint8))
        self.staging.bind_output(binding, names.CROSS_KEY_VALUES, self.shape.cross_shape(len(pixels)))
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:
            raise EncoderError(f"encoder failed: {exc}") from exc
        return self.staging
