"""Faults a production server meets, against the real server: dead stubs, a killed launcher, the admin door.

Each test checks what callers see (a result, or a retryable error at once: never a hang) and that the server
serves correct results afterwards.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.images import text_line
from tests.integration.conftest import running_server
from tests.trocr_serve import start_trocr_serve
from trocr_client import RetryPolicy, ServerUnavailableError, TrOCRClient
from trocr_serving.launcher.server import Ports, ServerError, TritonServer, free_ports
from trocr_serving.stubs import SHM_DIR

pytestmark = pytest.mark.integration

CLIENT_DEADLINE_S = 15.0
# A caller must learn of a dead stub quickly: the liveness check runs every 0.25 s; allow for a loaded machine.
FAIL_FAST_S = 5.0
IMAGE = text_line("fault line")


@pytest.fixture(scope="module")
def faulty(built_tiny, tmp_path_factory):
    """A server of its own: these tests kill parts of it."""
    with running_server(built_tiny, tmp_path_factory.mktemp("faults")) as server:
        yield server


def transcribe(server: TritonServer) -> tuple[str, float, tuple]:
    started = time.monotonic()
    try:
        # no client retries: what the server answers during the fault reaches the test
        with TrOCRClient(server.grpc_url, timeout_s=CLIENT_DEADLINE_S, retry=RetryPolicy(max_attempts=1)) as client:
            result = client.transcribe(IMAGE, max_new_tokens=31, ignore_eos=True)[0]
        return "ok", time.monotonic() - started, result.token_ids
    except Exception as exc:  # what the caller sees is the subject of the test
        return type(exc).__name__, time.monotonic() - started, (str(exc),)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("instance", ["scheduler_0_0", "trocr_0_0"])
def test_a_killed_stub_fails_its_requests_at_once_and_is_restarted(faulty, instance):
    kind, _, expected = transcribe(faulty)
    assert kind == "ok", expected
    restarts_before = len(faulty.watchdog.restarts)
    victim = faulty.watchdog.stubs[instance]
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(transcribe, faulty) for _ in range(60)]
        time.sleep(0.5)
        os.kill(victim.pid, signal.SIGKILL)
        was_unready = False
        deadline = time.monotonic() + 60
        while len(faulty.watchdog.restarts) == restarts_before and time.monotonic() < deadline:
            was_unready |= not faulty.is_ready()
            time.sleep(0.05)
        outcomes = [future.result() for future in futures]
    assert len(faulty.watchdog.restarts) == restarts_before + 1, "the watchdog did not restart the server"
    # The stub's death, or the server's if the kill took it down too (SIGABRT seen with Triton 2.51).
    cause = faulty.watchdog.restarts[-1].cause
    assert cause == f"stub process of {instance} died" or cause.startswith("tritonserver exited with code -"), cause
    assert faulty.is_ready()
    # Every request either succeeded with the right tokens or failed at once with a retryable error.
    for kind, seconds, detail in outcomes:
        if kind == "ok":
            assert detail == expected
        else:
            assert kind == ServerUnavailableError.__name__, detail
            assert seconds < FAIL_FAST_S, f"{kind} after {seconds:.1f} s: {detail}"
    assert was_unready, "readiness never showed the restart"
    assert not (SHM_DIR / victim.shm_region).exists(), "the dead stub's shared memory was left behind"
    after = [transcribe(faulty) for _ in range(4)]
    assert [(kind, tokens) for kind, _, tokens in after] == [("ok", expected)] * 4


def test_admin_apis_need_the_key(faulty):
    grpc = grpcclient.InferenceServerClient(faulty.grpc_url)
    http = httpclient.InferenceServerClient(faulty.http_url.removeprefix("http://"))
    try:
        for call in (
            lambda: grpc.unload_model("trocr"),
            lambda: grpc.load_model("trocr"),
            lambda: grpc.update_log_settings({"log_verbose_level": 1}),
            lambda: http.unload_model("trocr"),
            lambda: http.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}),
        ):
            with pytest.raises(InferenceServerException, match="restricted|denied|Unauthorized|permission"):
                call()
        assert grpc.is_model_ready("trocr") and faulty.is_ready()
        # With the key (the launcher's watchdog has it): allowed.
        assert grpc.get_log_settings(headers=faulty.admin_headers("grpc"))
        assert http.get_log_settings(headers=faulty.admin_headers("http"))
        with pytest.raises(InferenceServerException, match="restricted"):
            grpc.get_log_settings(headers={key: "wrong" for key in faulty.admin_headers("grpc")})
    finally:
        grpc.close()
        http.close()


def test_a_busy_port_is_refused_not_mistaken_for_our_server(built_tiny, faulty):
    server = TritonServer(built_tiny.repository, ports=Ports(faulty.ports.http, *free_ports(2)))
    with pytest.raises(ServerError, match="ports in use"):
        server.start(timeout_s=30)
    server.close()
    assert faulty.is_ready()


def _files(root: Path) -> dict[str, float]:
    return {str(path.relative_to(root)): path.stat().st_mtime for path in root.rglob("*")}


def test_serving_writes_nothing_into_the_repository(built_tiny, tmp_path):
    before = _files(built_tiny.repository)
    with TritonServer(built_tiny.repository, log_file=tmp_path / "tritonserver.log", exit_timeout_s=2) as server:
        assert transcribe(server)[0] == "ok"
    assert _files(built_tiny.repository) == before


def test_killing_the_launcher_stops_the_server(built_tiny, tmp_path):
    served = start_trocr_serve(built_tiny.repository, tmp_path / "serve.log", 2)
    launcher, ports = served.process, served.ports
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports.grpc}")

        def ready() -> bool:
            try:
                return client.is_server_ready()
            except InferenceServerException:
                return False

        wait_for(ready, 180, "trocr-serve to start")
        server_pid = served.server_pid()
        assert server_pid is not None
        launcher.kill()
        launcher.wait()
        wait_for(lambda: not Path(f"/proc/{server_pid}").exists() or _is_zombie(server_pid), 60, "tritonserver to exit")
        assert not ready()
        client.close()
    finally:
        if launcher.poll() is None:
            launcher.kill()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_servers_shared_memory_is_its_users_alone(faulty):
    """The Python backend's regions hold request images and results: not readable by other local users."""
    regions = [SHM_DIR / stub.shm_region for stub in faulty.watchdog.stubs.values()]
    assert regions and all(region.exists() for region in regions)
    modes = {region.name: oct(region.stat().st_mode & 0o777) for region in regions}
    assert set(modes.values()) == {oct(0o600)}, modes


def test_grpc_connections_are_kept_alive_and_aged_by_the_server(faulty):
    command = "\0".join(faulty.command(faulty._backends))
    for flag in ("--grpc-keepalive-time=", "--grpc-keepalive-timeout=", "--grpc-max-connection-age="):
        assert flag in command
    grpc = grpcclient.InferenceServerClient(faulty.grpc_url)
    try:
        assert grpc.is_server_ready()  # Triton 2.51 takes the flags
    finally:
        grpc.close()
