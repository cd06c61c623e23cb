"""`trocr-proto`: Triton's gRPC contract for code generators in other languages, from the installed client.

Writes `triton_grpc.protoset`: a protobuf FileDescriptorSet of `grpc_service.proto` (service
`inference.GRPCInferenceService`, ModelInfer and the health and metadata calls) and `model_config.proto`,
exactly as the tritonclient this project pins speaks them. `protoc --descriptor_set_in` generates code from
it in any language, and `grpcurl -protoset` calls the server with it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2, service_pb2

PROTOSET = "triton_grpc.protoset"


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """model_config.proto first: grpc_service.proto imports it."""
    files = []
    for module in (model_config_pb2, service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files.append(proto)
    return descriptor_pb2.FileDescriptorSet(file=files)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trocr-proto", description=__doc__)
    p.add_argument("--output", type=Path, default=Path("."), help="folder to write it in (default: here)")
    args = p.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / PROTOSET
    path.write_bytes(descriptor_set().SerializeToString())
    print(f"wrote {path}: grpc_service.proto + model_config.proto (package inference)")
    print(f"  protoc --descriptor_set_in={path} --go_out=. --go-grpc_out=. grpc_service.proto   # any language")
    print(f"  grpcurl -plaintext -protoset {path} 127.0.0.1:8001 inference.GRPCInferenceService/ServerReady")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
