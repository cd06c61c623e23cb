"""Triton model `encoder`: encoder.onnx (vision encoder + cross-attention keys/values) under ONNX Runtime."""

# First, under the project's pip launcher only: its site module puts the project's environment on the stub's
# path (trocr_serving.launcher). A stock Triton (NVIDIA's container) has the packages installed in its Python.
import contextlib

with contextlib.suppress(ModuleNotFoundError):
    import trocr_triton_site  # noqa: F401

# isort: split

from trocr_serving.onnx_model import OnnxGraphModel


class TritonPythonModel(OnnxGraphModel):
    pass
