"""ONNX Runtime sessions for the exported graphs, used by the server models, the build's checks and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from trocr_serving.execution import CPU, Execution


def create_session(
    path: Path,
    intra_op_threads: int = 0,
    spinning: bool = True,
    execution: Execution = CPU,
    providers: list | None = None,
) -> ort.InferenceSession:
    """A session on `execution`'s device (0 threads: ONNX Runtime's default, one per core), with its default
    execution providers or `providers` (trocr_serving.execution states them).

    `spinning=False` stops idle worker threads from busy-waiting: in the server several sessions in
    different processes share the cores, and a spinning idle pool steals them from the busy one.
    """
    ort.disable_telemetry_events()  # (its device id file goes to the server's own cache folder: see launcher)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    providers = providers or execution.providers()
    execution.prepare(providers)
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


# ONNX Runtime's type names of the float tensors the graphs take (an fp16 variant takes float16 caches).
FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def float_dtype(session: ort.InferenceSession, name: str) -> type:
    """The numpy type of a float input or output of `session`."""
    node = next(node for node in (*session.get_inputs(), *session.get_outputs()) if node.name == name)
    return FLOAT_TYPES[node.type]


class GraphRunner:
    """Runs one exported graph on named numpy inputs and returns its named outputs. Float inputs are cast to the
    float type the graph takes (the precision variants differ there)."""

    def __init__(self, path: Path, intra_op_threads: int = 0, spinning: bool = True, execution: Execution = CPU):
        self.session = create_session(path, intra_op_threads, spinning, execution)
        inputs = self.session.get_inputs()
        self.input_names = [node.name for node in inputs]
        self.output_names = [node.name for node in self.session.get_outputs()]
        self.float_inputs = {node.name: FLOAT_TYPES[node.type] for node in inputs if node.type in FLOAT_TYPES}

    def run(self, inputs: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        names = output_names or self.output_names
        feed = {name: inputs[name] for name in self.input_names}
        for name, dtype in self.float_inputs.items():
            feed[name] = feed[name].astype(dtype, copy=False)
        return dict(zip(names, self.session.run(names, feed)))
