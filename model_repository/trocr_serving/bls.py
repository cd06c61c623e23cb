"""Calls from one Triton Python model to another (Business Logic Scripting). Runs inside the server only."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils


class ModelCallError(RuntimeError):
    """A BLS call that failed; the message carries the called model's error."""


def infer(model_name: str, inputs: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
    request = pb_utils.InferenceRequest(
        model_name=model_name,
        inputs=[pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in inputs.items()],
        requested_output_names=output_names,
    )
    response = request.exec()
    if response.has_error():
        raise ModelCallError(f"{model_name}: {response.error().message()}")
    return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in output_names}


def error_response(message: str, code: str = "INVALID_ARG") -> pb_utils.InferenceResponse:
    """A per-request error with a real status (INVALID_ARG, INTERNAL, UNAVAILABLE, ...)."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, getattr(pb_utils.TritonError, code)))


def model_parameters(model_config: dict) -> dict[str, str]:
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}
