"""KServe v2 on the wire without the client libraries: what generated code in any language, curl, or an attacker
sends. Shared by the any-language tests and the protocol fuzzer."""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request

import grpc
from tritonclient.grpc import service_pb2


def model_infer(
    grpc_url: str, request: service_pb2.ModelInferRequest, timeout_s: float = 60
) -> service_pb2.ModelInferResponse:
    """ModelInfer with grpcio and the protobuf messages alone; a refusal raises grpc.RpcError."""
    with grpc.insecure_channel(grpc_url) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        return call(request, timeout=timeout_s)


def bytes_tensor(items: list[bytes]) -> bytes:
    """Triton's raw BYTES layout: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def read_bytes_tensor(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items


def post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout_s: float = 60) -> tuple[int, bytes]:
    """An HTTP POST's status and body, whatever the status."""
    request = urllib.request.Request(url, data=body, headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post_json(http_url: str, model: str, body: dict) -> tuple[int, dict]:
    status, answer = post(f"{http_url}/v2/models/{model}/infer", json.dumps(body).encode())
    return status, json.loads(answer)
