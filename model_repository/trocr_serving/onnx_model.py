"""A Triton Python-backend model that runs one exported ONNX graph with ONNX Runtime.

The server binary from PyPI has no onnxruntime backend, so `encoder` runs ONNX Runtime inside the Python
backend (the scheduler runs the decoder graph itself). Triton does not batch it (an empty batch crashes Triton
2.51: trocr_build.model_config); when `execute` gets several requests, those whose non-batch shapes agree run
as one ONNX Runtime call, and each gets its own rows back.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from trocr_serving.bls import error_response, model_parameters
from trocr_serving.execution import Execution
from trocr_serving.metrics import BatchSizeMetric, release_families
from trocr_serving.onnx_runtime import GraphRunner
from trocr_serving.refusals import InvalidRequestError, Refusal
from trocr_serving.stubs import restrict_own_shm_region

LOGGER = logging.getLogger(__name__)


class OnnxGraphModel:
    def initialize(self, args: dict) -> None:
        restrict_own_shm_region()
        config = json.loads(args["model_config"])
        parameters = model_parameters(config)
        path = Path(args["model_repository"]) / args["model_version"] / parameters["onnx_file"]
        if not path.exists():
            raise FileNotFoundError(f"{config['name']}: {path} is missing; run trocr-build")
        self.max_rows = int(parameters["max_rows"])  # unbatched by Triton (model_config): the bound is ours
        threads = int(parameters.get("intra_op_threads", "0"))
        self.runner = GraphRunner(path, threads, spinning=False, execution=Execution.of_instance(args))
        self.batch_size_metric = BatchSizeMetric(config["name"])
        declared = {tensor["name"] for tensor in config["input"]}
        if declared != set(self.runner.input_names):
            raise ValueError(f"{config['name']}: config inputs {declared} != graph inputs {self.runner.input_names}")

    def finalize(self) -> None:
        del self.batch_size_metric
        release_families()

    def execute(self, requests: list) -> list:
        groups: dict[tuple, list[int]] = defaultdict(list)
        inputs = []
        responses: list = [None] * len(requests)
        for index, request in enumerate(requests):
            arrays = {
                name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.runner.input_names
            }
            inputs.append(arrays)
            rows = len(arrays[self.runner.input_names[0]])
            if not 1 <= rows <= self.max_rows:
                responses[index] = error_response(InvalidRequestError(f"{rows} rows: send 1..{self.max_rows}"))
                continue
            groups[tuple(array.shape[1:] for array in arrays.values())].append(index)
        for members in groups.values():
            try:
                self._run_group(requests, inputs, members, responses)
            except Exception as exc:  # one failing group must not fail the others
                LOGGER.exception("ONNX Runtime failed")
                for index in members:
                    responses[index] = error_response(Refusal(f"ONNX Runtime failed: {exc}"))
        return responses

    def _run_group(self, requests, inputs, members, responses) -> None:
        batch = {name: np.concatenate([inputs[i][name] for i in members]) for name in self.runner.input_names}
        wanted = sorted({name for i in members for name in requests[i].requested_output_names()})
        outputs = self.runner.run(batch, wanted or None)
        self.batch_size_metric.observe(len(batch[self.runner.input_names[0]]))
        start = 0
        for index in members:
            rows = len(inputs[index][self.runner.input_names[0]])
            requested = requests[index].requested_output_names() or list(outputs)
            tensors = [pb_utils.Tensor(name, outputs[name][start : start + rows]) for name in requested]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start += rows
