"""`trocr-serve`: run Triton Inference Server on a model repository until interrupted, streaming its log."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import time
from pathlib import Path

from trocr_client.logs import configure_logging
from trocr_serving import paths
from trocr_serving.launcher.server import (
    ADMIN_KEY_HEADER,
    DEFAULT_HOST,
    ENDPOINTS,
    RESTRICTED_APIS,
    Access,
    GrpcTls,
    Ports,
    ServerError,
    ServerInstall,
    TritonServer,
)
from trocr_serving.server_release import PIP_SERVER_VERSION

LOGGER = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trocr-serve", description=__doc__)
    p.add_argument("--model-repository", type=Path, default=paths.default_repository(), help="default: %(default)s")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: loopback only)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose level")
    p.add_argument("--startup-timeout-s", type=float, default=300.0)
    p.add_argument("--exit-timeout-s", type=int, default=30, help="time in-flight requests get when stopping")
    p.add_argument(
        "--expose",
        default=",".join(ENDPOINTS),
        help="endpoints that listen on --host (the others on loopback only); default: %(default)s",
    )
    p.add_argument(
        "--admin-key-env",
        default="TROCR_ADMIN_KEY",
        help=f"environment variable holding the key that opens Triton's admin APIs ({', '.join(RESTRICTED_APIS)}; "
        f"sent as the '{ADMIN_KEY_HEADER}' header); unset: a random key nobody else knows. Default: %(default)s",
    )
    p.add_argument("--grpc-tls-cert", type=Path, help="PEM server certificate: gRPC over TLS")
    p.add_argument("--grpc-tls-key", type=Path, help="PEM server key")
    p.add_argument("--grpc-tls-root-cert", type=Path, help="PEM CA: clients must present a certificate it signed")
    p.add_argument("--triton-arg", action="append", default=[], help="passed to tritonserver as is (repeatable)")
    p.add_argument(
        "--tritonserver",
        type=Path,
        help="a stock tritonserver binary (NVIDIA's container: /opt/tritonserver/bin/tritonserver) instead of the "
        "pip one",
    )
    p.add_argument("--backend-directory", type=Path, help="with --tritonserver (default: <its install>/backends)")
    return p


def access_of(args: argparse.Namespace) -> Access:
    tls = None
    if args.grpc_tls_cert or args.grpc_tls_key:
        if not (args.grpc_tls_cert and args.grpc_tls_key):
            raise SystemExit("trocr-serve: --grpc-tls-cert and --grpc-tls-key go together")
        tls = GrpcTls(args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_root_cert)
    key = os.environ.get(args.admin_key_env)
    expose = tuple(name.strip() for name in args.expose.split(",") if name.strip())
    try:
        return Access(expose=expose, tls=tls, **({"admin_key": key} if key else {}))
    except ValueError as exc:
        raise SystemExit(f"trocr-serve: --expose: {exc}") from None


# The pip server's release and what makes it unfit for production (NVIDIA's security bulletin of August 2026).
PIP_SERVER_WARNING = (
    f"this is the pip-installed tritonserver {PIP_SERVER_VERSION} (nvidia-pytriton 0.7.0), for development and "
    "tests: it has "
    "published vulnerabilities fixed only in NVIDIA's Triton container 26.06 and later (CVE-2026-47627, "
    "critical; CVE-2026-47628; CVE-2026-47606; CVE-2025-23320). Serving it on %s, beyond this machine: for "
    "production, run the images of deploy/docker (Triton 26.09)"
)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _stream(path: Path, position: int) -> int:
    with open(path, "rb") as handle:
        handle.seek(position)
        chunk = handle.read()
    if chunk:
        sys.stdout.write(chunk.decode(errors="replace"))
        sys.stdout.flush()
    return position + len(chunk)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    if args.backend_directory is not None and args.tritonserver is None:
        raise SystemExit("trocr-serve: --backend-directory goes with --tritonserver (the pip server brings its own)")
    if args.tritonserver is None and not is_loopback(args.host):
        LOGGER.warning(PIP_SERVER_WARNING, args.host)
    server = TritonServer(
        args.model_repository,
        host=args.host,
        ports=Ports(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port),
        log_verbose=args.log_verbose,
        exit_timeout_s=args.exit_timeout_s,
        access=access_of(args),
        extra_args=tuple(args.triton_arg),
        install=ServerInstall(args.tritonserver, args.backend_directory),
    )
    stopping = False

    def request_stop(signum, _frame):
        nonlocal stopping
        LOGGER.info("received %s: stopping", signal.Signals(signum).name)
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        server.start(args.startup_timeout_s)
    except ServerError as exc:
        LOGGER.error("%s", exc)
        server.close()
        return 1
    LOGGER.info("serving: gRPC %s, HTTP %s, metrics %s", server.grpc_url, server.http_url, server.metrics_url)
    position, failure = 0, None
    try:
        # The server's watchdog restarts it when it or a stub dies; it is down for good only when it gave up.
        while not stopping and (failure := server.failure()) is None:
            position = _stream(server.log_path, position)
            time.sleep(0.5)
    finally:
        server.stop()
        _stream(server.log_path, position)  # the shutdown log
        server.close()
    if failure is not None:
        LOGGER.error("trocr-serve stops: %s", failure)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
