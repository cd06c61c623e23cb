"""Triton model `encoder`: encoder.onnx (vision encoder + cross-attention keys/values) under ONNX Runtime."""

# First: puts the project environment on the path (see trocr_serving.launcher).
import trocr_triton_site  # noqa: F401

# isort: split

from trocr_serving.onnx_model import OnnxGraphModel


class TritonPythonModel(OnnxGraphModel):
    pass
