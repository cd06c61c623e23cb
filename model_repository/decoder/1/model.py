"""Triton model `decoder`: decoder.onnx (one decoding step for a batch of sequences) under ONNX Runtime."""

import trocr_triton_site  # noqa: F401  (first: the project environment, see trocr_serving.launcher)
from trocr_serving.onnx_model import OnnxGraphModel


class TritonPythonModel(OnnxGraphModel):
    pass
