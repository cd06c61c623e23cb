"""Arrays as a model reads and writes the tensors of its contract (trocr_client.protocol.TensorSpec)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trocr_client.protocol import TensorSpec


def model_array(spec: TensorSpec, value) -> np.ndarray:
    """`value` in `spec`'s numpy type, shaped as the model sees it: [images] for a per-image tensor (its config
    reshapes the [images, 1] that callers send and receive)."""
    array = np.asarray(value, dtype=spec.numpy_dtype)
    return array.reshape(-1) if spec.per_image else array


def output_tensors(specs: Sequence[TensorSpec], values: dict, tensor_type) -> list:
    """A response's tensors (`tensor_type`: pb_utils.Tensor), one per spec, from `values` by name."""
    return [tensor_type(spec.name, model_array(spec, values[spec.name])) for spec in specs]
