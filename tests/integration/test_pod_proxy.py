"""The Kubernetes pod's proxy (deploy/k8s/base/proxy/nginx.conf), run by Debian's nginx in front of a real server:
gRPC passes, a body over the request limit is refused before the server, HTTP passes health and metadata and
refuses inference (Triton 2.51's JSON parser aborts on some requests)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2

from tests.debian_tools import debian_tool
from tests.images import text_line
from tests.raw_wire import bytes_tensor, model_infer, post
from trocr_client import TrOCRClient, protocol
from trocr_loadtest import fleet
from trocr_serving.launcher.server import TritonServer, free_ports, port_in_use

pytestmark = pytest.mark.integration

POD_PROXY = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "proxy" / "nginx.conf"


def pod_proxy_config(server: TritonServer, grpc_port: int, http_port: int, work: Path) -> str:
    """The shipped file, with the pod's fixed addresses and paths replaced by this test's."""
    text = POD_PROXY.read_text()
    replacements = {
        "grpc://127.0.0.1:8001": f"grpc://{server.grpc_url}",
        "http://127.0.0.1:8000": server.http_url,
        "listen 9001 http2;": f"listen 127.0.0.1:{grpc_port} http2;",
        "listen 9000;": f"listen 127.0.0.1:{http_port};",
        "/tmp/": f"{work}/",
        "error_log /dev/stderr": f"error_log {work}/error.log",
    }
    for old, new in replacements.items():
        assert old in text, f"{POD_PROXY} no longer holds {old!r}: update this test"
        text = text.replace(old, new)
    return ("user nobody nogroup;\n" if os.geteuid() == 0 else "") + text


def test_the_pods_proxy_bounds_what_reaches_triton(built_tiny, tmp_path):
    nginx = debian_tool("nginx", "usr/sbin/nginx")
    work = tmp_path / "nginx"
    work.mkdir()
    work.chmod(0o755)  # workers run as nobody when the master runs as root
    grpc_port, http_port = free_ports(2)
    with TritonServer(built_tiny.repository, log_file=tmp_path / "tritonserver.log", exit_timeout_s=2) as server:
        config = work / "nginx.conf"
        config.write_text(pod_proxy_config(server, grpc_port, http_port, work))
        proxy = subprocess.Popen([str(nginx), "-p", str(work), "-c", str(config), "-g", "daemon off;"])
        try:
            deadline = time.monotonic() + 30
            while not (port_in_use("127.0.0.1", grpc_port) and port_in_use("127.0.0.1", http_port)):
                assert proxy.poll() is None and time.monotonic() < deadline, (work / "error.log").read_text()
                time.sleep(0.1)
            proxy_grpc = f"127.0.0.1:{grpc_port}"
            with TrOCRClient(proxy_grpc, timeout_s=60) as client:
                assert client.transcribe(text_line("through the pod's proxy"), max_new_tokens=4)[0].ok
            request = service_pb2.ModelInferRequest(model_name="trocr")
            request.inputs.add(name="image", datatype="BYTES", shape=[1, 1])
            request.raw_input_contents.append(bytes_tensor([bytes(fleet.MAX_BODY_BYTES)]))
            with pytest.raises(grpc.RpcError) as refused:
                model_infer(proxy_grpc, request)
            assert "413" in refused.value.details()
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=10) as ready:
                assert ready.status == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/trocr", timeout=10) as metadata:
                assert json.loads(metadata.read())["name"] == protocol.MODEL_NAME
            crash = {"inputs": [{"name": "num_beams", "shape": [2**62, 1], "datatype": "INT32", "data": [1, 2]}]}
            status, _ = post(f"http://127.0.0.1:{http_port}/v2/models/trocr/infer", json.dumps(crash).encode())
            assert status == 403
            time.sleep(0.5)
            assert server.process.poll() is None and not server.watchdog.restarts
        finally:
            proxy.terminate()
            proxy.wait(30)
