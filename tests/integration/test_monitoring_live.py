"""A live server exports every metric that the dashboard, the alerts and the autoscaler read, and runs the Triton
release that the GPU image is built on."""

from __future__ import annotations

import re
import urllib.request

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.images import NOT_AN_IMAGE, text_line
from tests.integration.test_errors import raw_infer
from tests.monitoring import SYNTHESIZED, all_expressions, metric_names
from trocr_serving.server_release import PIP_SERVER_VERSION, ServerRelease

pytestmark = pytest.mark.integration


def exposed_names(metrics_url: str) -> set[str]:
    """The sample names as Triton writes them, which Prometheus stores as they are (prometheus_client's parser
    would add `_total` to counters named without it, like nv_inference_count)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    return {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)[0] for line in lines if line and not line.startswith("#")}


def test_every_metric_the_monitoring_reads_is_exported(tiny):
    assert len(raw_infer(tiny, [text_line("hello")], max_new_tokens=4)) == 1
    with pytest.raises(InferenceServerException):  # a failed request: its counter exists from then on
        raw_infer(tiny, [NOT_AN_IMAGE])
    exported = exposed_names(tiny.server.metrics_url)
    used = {name: metric_names(expression) - SYNTHESIZED for name, expression in all_expressions().items()}
    missing = {name: sorted(names - exported) for name, names in used.items() if names - exported}
    assert not missing, f"read by the monitoring but not exported: {missing}"
    assert set().union(*used.values()) >= {"trocr_active_sequences", "trocr_requests_failed_total"}


def test_the_served_pip_server_is_the_release_trocr_serve_warns_about(tiny):
    """The monitoring is checked live against the pip server, whose release trocr-serve names when it warns
    that it is not for production; the images run Triton 26.09 (checked statically: tests/unit/test_dockerfile)."""
    client = grpcclient.InferenceServerClient(tiny.server.grpc_url)
    try:
        version = client.get_server_metadata().version
    finally:
        client.close()
    assert version == PIP_SERVER_VERSION
    # and the release its models were told, checked by the launcher against what the server reports
    assert tiny.server.release == ServerRelease.of(PIP_SERVER_VERSION)
