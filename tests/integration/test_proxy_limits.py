"""Bounded memory per request before the model sees it: Triton 2.51 bounds no message (a 1.5 GiB request was
buffered whole, the server's memory at 11.5 GiB), so the documented proxy (trocr-fleet's nginx) refuses what is
over the project's request limit, and the server's memory does not move."""

from __future__ import annotations

import grpc
import pytest
from tritonclient.grpc import service_pb2

from tests.debian_tools import debian_tool
from tests.images import text_line
from tests.raw_wire import bytes_tensor, model_infer
from tests.server_memory import rss_bytes
from trocr_client import TrOCRClient, protocol
from trocr_loadtest import fleet
from trocr_serving.launcher.server import TritonServer

pytestmark = pytest.mark.integration

HUGE_BYTES = 3 * 2**29  # 1.5 GiB
MAX_RSS_GROWTH = 0.10


def one_image_request(size_bytes: int) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="trocr")
    request.inputs.add(name="image", datatype="BYTES", shape=[1, 1])
    request.raw_input_contents.append(bytes_tensor([bytes(size_bytes)]))
    return request


def test_a_request_over_the_limit_is_refused_at_the_proxy_and_the_server_memory_stays(built_tiny, tmp_path):
    nginx = debian_tool("nginx", "usr/sbin/nginx")
    with TritonServer(built_tiny.repository, log_file=tmp_path / "tritonserver.log", exit_timeout_s=2) as server:
        proxy = fleet.NginxProxy(nginx, [server.grpc_url]).start()
        try:
            with TrOCRClient(proxy.url, timeout_s=60) as client:  # served through the proxy
                assert client.transcribe(text_line("through the proxy"), max_new_tokens=4)[0].ok
            before = rss_bytes(server)
            with pytest.raises(grpc.RpcError) as refused:
                model_infer(proxy.url, one_image_request(HUGE_BYTES), timeout_s=300)
            after = rss_bytes(server)
            # A request at the project's limit still passes the proxy: the server itself answers it.
            with pytest.raises(grpc.RpcError) as at_the_limit:
                model_infer(proxy.url, one_image_request(protocol.MAX_IMAGE_BYTES + 1), timeout_s=120)
        finally:
            proxy.stop()
    print(f"1.5 GiB through nginx: {refused.value.code()} {refused.value.details()!r}; server RSS {before} -> {after}")
    assert "413" in refused.value.details(), refused.value.details()  # nginx: Request Entity Too Large
    assert after <= before * (1 + MAX_RSS_GROWTH), (before, after)
    assert at_the_limit.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exceeds" in at_the_limit.value.details() or "image 0" in at_the_limit.value.details()
