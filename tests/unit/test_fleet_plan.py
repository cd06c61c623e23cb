import json

import pytest

from trocr_loadtest.fleet import NginxProxy, planned_replicas


def test_the_fleet_takes_its_replica_count_from_the_capacity_plan(tmp_path):
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"capacity_plan": {"replicas": 3, "per_replica_images_per_s": 2.1}}))
    assert planned_replicas(sweep) == 3
    sweep.write_text(json.dumps({"capacity_plan": {"replicas": None}}))
    with pytest.raises(SystemExit, match="no capacity plan with a replica count"):
        planned_replicas(sweep)


def test_the_proxy_balances_every_replica_and_retries_on_the_others():
    proxy = NginxProxy("nginx", ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"])
    config = proxy.config()
    assert config.count("server 127.0.0.1:900") == 3
    assert "grpc_pass grpc://replicas;" in config and "grpc_next_upstream_tries 3;" in config
    assert f"listen 127.0.0.1:{proxy.port} http2;" in config
