"""Replicas behind a real L7 gRPC proxy (Debian's nginx, grpc_pass): one replica killed in the middle of the load
and started again loses no request with the client's retries, and serves again through the proxy."""

from __future__ import annotations

import json

import pytest

from tests.debian_tools import debian_tool
from trocr_loadtest import fleet

pytestmark = pytest.mark.integration


def test_killing_a_replica_under_load_loses_no_request(built_tiny, tmp_path):
    nginx = debian_tool("nginx", "usr/sbin/nginx")
    report_path = tmp_path / "fleet.json"
    argv = [f"--repository={built_tiny.repository}", f"--nginx={nginx}", f"--json={report_path}"]
    code = fleet.main([*argv, "--replicas=2", "--concurrency=8", "--before-s=6", "--after-s=6"])
    report = json.loads(report_path.read_text())
    assert code == 0 and report["requests_lost"] == 0, report
    assert report["requests"] > 100 and report["throughput_after_per_s"] > 0
    assert report["killed_at_s"] >= 6 and report["replica_ready_after_s"] > 0
    assert report["replica_served_again"], report  # the proxy sends to the restarted replica again
