"""Triton model `decoder`: decoder.onnx (one decoding step for a batch of sequences) under ONNX Runtime."""

# First: puts the project environment on the path (see trocr_serving.launcher).
import trocr_triton_site  # noqa: F401

# isort: split

from trocr_serving.onnx_model import OnnxGraphModel


class TritonPythonModel(OnnxGraphModel):
    pass
