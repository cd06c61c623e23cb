"""ONNX Runtime sessions for the exported graphs, used by the server models, the build's checks and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def create_session(path: Path, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A CPU session (0 threads: ONNX Runtime's default, one per core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class GraphRunner:
    """Runs one exported graph on named numpy inputs and returns its named outputs."""

    def __init__(self, path: Path, intra_op_threads: int = 0):
        self.session = create_session(path, intra_op_threads)
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        names = output_names or self.output_names
        return dict(zip(names, self.session.run(names, {name: inputs[name] for name in self.input_names})))
