"""A crash always heals: `trocr-serve` itself (a subprocess, as an operator runs it), under load, with each part of
the server killed three times in a row. After each death the service answers again, `trocr-serve` is still
running, and no request waits past its deadline. The outage of each kill is measured and printed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest

from tests.images import text_line
from tests.raw_wire import post
from tests.trocr_serve import Launcher, start_trocr_serve
from trocr_client import RetryPolicy, TrOCRClient
from trocr_serving.stubs import SHM_DIR, stub_processes

pytestmark = pytest.mark.integration

KILLS_IN_A_ROW = 3
CLIENT_DEADLINE_S = 10.0
HANG_MARGIN_S = 5.0  # a request answers within its deadline and this (a loaded 2-core machine)
HEAL_TIMEOUT_S = 90.0
LOAD_THREADS = 4
IMAGE = text_line("heal me")


def transcribe(url: str, deadline_s: float = CLIENT_DEADLINE_S) -> tuple[bool, float]:
    started = time.monotonic()
    try:
        with TrOCRClient(url, timeout_s=deadline_s, retry=RetryPolicy(max_attempts=1)) as client:
            ok = client.transcribe(IMAGE, max_new_tokens=8)[0].ok
    except Exception:  # what the load sees during a fault is counted, not raised
        ok = False
    return ok, time.monotonic() - started


@dataclass
class Load:
    """Clients sending requests back to back until stopped; every request's duration is kept."""

    url: str
    durations_s: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(LOAD_THREADS)]
        for thread in self._threads:
            thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.durations_s.append(transcribe(self.url)[1])

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_DEADLINE_S + HANG_MARGIN_S)
        assert not any(thread.is_alive() for thread in self._threads), "a request hung past its deadline"


@pytest.fixture(scope="module")
def launcher(built_tiny, tmp_path_factory):
    served = start_trocr_serve(built_tiny.repository, tmp_path_factory.mktemp("heals") / "trocr-serve.log", 5)
    try:
        wait_until_started(served)
        yield served
    finally:
        if served.process.poll() is None:
            served.process.send_signal(signal.SIGTERM)
            served.process.wait(60)


def wait_until_started(served: Launcher) -> None:
    """trocr-serve's start is over (its watchdog runs) and the service answers."""
    since = time.monotonic()
    while "serving: gRPC" not in served.log.read_text(errors="replace"):
        assert time.monotonic() - since < HEAL_TIMEOUT_S, served.log_tail()
        assert served.process.poll() is None, f"trocr-serve exited ({served.process.poll()})\n{served.log_tail()}"
        time.sleep(0.2)
    wait_for_service(served, since)


def wait_for_service(served: Launcher, since: float) -> float:
    """Seconds from `since` (the fault) until a request succeeds again."""
    while time.monotonic() - since < HEAL_TIMEOUT_S:
        assert served.process.poll() is None, f"trocr-serve exited ({served.process.poll()})\n{served.log_tail()}"
        if transcribe(served.grpc_url, deadline_s=5)[0]:
            return time.monotonic() - since
        time.sleep(0.2)
    raise AssertionError(f"no answer {HEAL_TIMEOUT_S:.0f} s after the fault\n{served.log_tail()}")


def wait_for_restart(served: Launcher, server_pid: int, since: float) -> None:
    while served.server_pid() in (None, server_pid):
        assert time.monotonic() - since < HEAL_TIMEOUT_S, f"no restart\n{served.log_tail()}"
        assert served.process.poll() is None, f"trocr-serve exited ({served.process.poll()})\n{served.log_tail()}"
        time.sleep(0.1)


def kill_server(served: Launcher, server_pid: int) -> None:
    os.kill(server_pid, signal.SIGKILL)


def kill_stub(model: str, sig: int = signal.SIGKILL):
    def kill(served: Launcher, server_pid: int) -> None:
        stubs = [stub for stub in stub_processes(server_pid) if stub.model_name == model]
        assert stubs, f"no stub of {model}"
        os.kill(stubs[0].pid, sig)

    return kill


def crash_with_a_request(served: Launcher, server_pid: int) -> None:
    """A crash from inside tritonserver: Triton 2.51's HTTP front aborts on this request (test_protocol_fuzz)."""
    huge = {"name": "num_beams", "shape": [2**62, 1], "datatype": "INT32", "data": [1, 2]}
    with contextlib.suppress(OSError):  # the connection dies with the server
        post(f"http://127.0.0.1:{served.ports.http}/v2/models/trocr/infer", json.dumps({"inputs": [huge]}).encode())


FAULTS = {
    "kill -9 tritonserver": kill_server,
    "kill -9 the scheduler's stub": kill_stub("scheduler"),
    "kill -9 a front stub": kill_stub("trocr"),
    "a front stub crashes (SIGSEGV)": kill_stub("trocr", signal.SIGSEGV),
    "a request crashes tritonserver": crash_with_a_request,
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_service_heals_after_each_death_and_trocr_serve_stays(launcher, fault, record_property):
    outages_s = []
    with Load(launcher.grpc_url) as load:
        for _ in range(KILLS_IN_A_ROW):
            time.sleep(1.0)  # requests in flight when the fault comes
            server_pid = launcher.server_pid()
            assert server_pid is not None, launcher.log_tail()
            killed_at = time.monotonic()
            FAULTS[fault](launcher, server_pid)
            # The watchdog restarts the whole server (the other front instances may answer until it does).
            wait_for_restart(launcher, server_pid, killed_at)
            outages_s.append(wait_for_service(launcher, killed_at))
            assert launcher.process.poll() is None, launcher.log_tail()
    assert max(load.durations_s) < CLIENT_DEADLINE_S + HANG_MARGIN_S, max(load.durations_s)
    record_property("outages_s", outages_s)
    print(f"{fault}: outages {', '.join(f'{s:.1f}' for s in outages_s)} s")


def test_trocr_serve_stops_cleanly_when_asked(launcher):
    launcher.process.send_signal(signal.SIGTERM)
    assert launcher.process.wait(60) == 0, launcher.log_tail()
    log = launcher.log.read_text()
    assert "received SIGTERM: stopping" in log and "trocr-serve stops" not in log, launcher.log_tail()


def test_trocr_serve_exits_non_zero_when_restarts_fail(built_tiny, tmp_path):
    """Its ports taken while it was down: every start fails, and trocr-serve says so and exits 1 (an orchestrator
    then replaces the pod) instead of serving nothing, leaving no shared memory behind (a start that fails after
    loading the models left its stubs' regions: 2 GiB in /dev/shm per run of this test, before)."""
    regions_before = set(SHM_DIR.iterdir())
    served = start_trocr_serve(built_tiny.repository, tmp_path / "trocr-serve.log", 2)
    process, ports, log = served.process, served.ports, served.log
    try:
        wait_until_started(served)
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            os.kill(served.server_pid(), signal.SIGKILL)
            for _ in range(100):  # the port is free once the server is gone
                try:
                    squatter.bind(("127.0.0.1", ports.grpc))
                    break
                except OSError:
                    time.sleep(0.05)
            squatter.listen()
            assert process.wait(HEAL_TIMEOUT_S) == 1, served.log_tail()
        assert "trocr-serve stops: tritonserver exited with code -9; the 3 starts after it failed" in log.read_text()
        assert set(SHM_DIR.iterdir()) <= regions_before
    finally:
        if process.poll() is None:
            process.kill()
