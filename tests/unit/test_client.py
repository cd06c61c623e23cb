import io

import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests.images import text_line
from trocr_client import proto
from trocr_client.errors import (
    DeadlineExceededError,
    InvalidInputError,
    RequestCancelledError,
    ServerError,
    ServerUnavailableError,
    from_triton,
)
from trocr_client.images import encode_image


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_path_bytes_are_sent_unchanged(tmp_path):
    data = text_line("x", fmt="JPEG")
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    assert encode_image(path) == data and encode_image(str(path)) == data and encode_image(data) == data


def test_pil_image_is_encoded_losslessly():
    image = Image.new("RGB", (5, 4), (1, 2, 3))
    assert decoded(encode_image(image)).getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 1), (4, 5, 3), (4, 5, 4)])
def test_numpy_arrays(shape):
    assert decoded(encode_image(np.zeros(shape, dtype=np.uint8))).size == (5, 4)


def test_numpy_float_array_is_refused():
    with pytest.raises(InvalidInputError, match="must be uint8"):
        encode_image(np.zeros((4, 5), dtype=np.float32))


def test_empty_bytes_are_refused():
    with pytest.raises(InvalidInputError, match="empty image"):
        encode_image(b"")


def test_unknown_type_is_refused():
    with pytest.raises(InvalidInputError, match="cannot send a int"):
        encode_image(3)


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        ("StatusCode.INVALID_ARGUMENT", InvalidInputError, False),
        ("StatusCode.UNAVAILABLE", ServerUnavailableError, True),
        ("StatusCode.DEADLINE_EXCEEDED", DeadlineExceededError, True),
        ("StatusCode.CANCELLED", RequestCancelledError, False),
        ("StatusCode.INTERNAL", ServerError, False),
    ],
)
def test_statuses_map_to_errors(status, error, retryable):
    mapped = from_triton(InferenceServerException("boom", status=status))
    assert type(mapped) is error and mapped.retryable is retryable
    assert mapped.status == status.removeprefix("StatusCode.") and "boom" in str(mapped)


@pytest.mark.parametrize(
    "message", ["deadline exceeded while decoding", "Request timeout expired"], ids=["decoding", "in-queue"]
)
def test_a_deadline_the_server_enforced_is_a_deadline_error_like_the_callers_own(message):
    """Triton's Python backend has no DEADLINE_EXCEEDED: the server's deadlines come back as UNAVAILABLE."""
    mapped = from_triton(InferenceServerException(message, status="StatusCode.UNAVAILABLE"))
    assert type(mapped) is DeadlineExceededError and mapped.retryable


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("Request for unknown model: 'trocr' has no available versions", ServerUnavailableError),
        ("Request for unknown model: 'trocrr' is not found", InvalidInputError),
    ],
    ids=["model-reloading-or-shutting-down", "no-such-model"],
)
def test_not_found_is_retryable_only_while_the_model_is_not_loaded(message, error):
    assert type(from_triton(InferenceServerException(message, status="StatusCode.NOT_FOUND"))) is error


def test_a_dead_model_process_is_retryable():
    dead = InferenceServerException("Stub process 'trocr_0_0' is not healthy.", status="StatusCode.INTERNAL")
    assert type(from_triton(dead)) is ServerUnavailableError


def test_the_protoset_holds_the_inference_service_for_code_generators(tmp_path):
    assert proto.main(["--output", str(tmp_path)]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString((tmp_path / proto.PROTOSET).read_bytes()).file
    assert [f.name for f in files] == ["model_config.proto", "grpc_service.proto"]
    (service,) = files[1].service
    assert service.name == "GRPCInferenceService" and files[1].package == "inference"
    assert {"ModelInfer", "ModelMetadata", "ServerReady"} <= {method.name for method in service.method}
    assert files[1].dependency == ["model_config.proto"]


def test_a_proxys_413_is_invalid_input_not_worth_a_retry():
    refused = InferenceServerException("Received http2 header with status: 413", status="StatusCode.UNKNOWN")
    mapped = from_triton(refused)
    assert type(mapped) is InvalidInputError and "too large for the proxy" in str(mapped)
