"""Tensors that stay on the engine's device: buffers allocated once, whose slices are bound to graphs by address."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from trocr_serving.execution import Execution


class DeviceBuffer:
    """A float buffer in device memory, allocated once; slices of it are bound to graphs by address."""

    def __init__(self, elements: int, dtype: type, execution: Execution):
        self.execution = execution
        self.dtype = dtype
        self.elements = elements
        self.value = ort.OrtValue.ortvalue_from_shape_and_type([elements], dtype, *execution.ort_device)
        self.address = self.value.data_ptr()

    def bind_input(self, binding: ort.IOBinding, name: str, shape: tuple[int, ...], offset: int = 0) -> None:
        binding.bind_input(name, *self.execution.ort_device, self.dtype, list(shape), self._at(offset, shape))

    def bind_output(self, binding: ort.IOBinding, name: str, shape: tuple[int, ...], offset: int = 0) -> None:
        binding.bind_output(name, *self.execution.ort_device, self.dtype, list(shape), self._at(offset, shape))

    def _at(self, offset: int, shape: tuple[int, ...]) -> int:
        """The address of element `offset`, after checking that `shape` from there fits (a graph writes a bound
        output wherever it is told: past the end would overwrite other memory)."""
        if offset < 0 or offset + int(np.prod(shape)) > self.elements:
            raise RuntimeError(f"{shape} at element {offset} does not fit a buffer of {self.elements} elements")
        return self.address + offset * np.dtype(self.dtype).itemsize
