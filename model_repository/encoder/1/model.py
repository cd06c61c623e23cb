"""Triton model `encoder`: encoder.onnx (vision encoder + cross-attention keys/values) under ONNX Runtime."""

import trocr_triton_site  # noqa: F401  (first: the project environment, see trocr_serving.launcher)
from trocr_serving.onnx_model import OnnxGraphModel


class TritonPythonModel(OnnxGraphModel):
    pass
