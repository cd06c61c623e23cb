"""The launcher's watchdog: a model whose stub process died is reloaded, and the server is not ready meanwhile.

Measured on Triton 2.51 (`kill -9` of a stub): nothing restarts the stub, the model and the server stay
"ready", and every later request to that instance fails ("Stub process '<instance>' is not healthy"). A
`load` of the loaded model does nothing (its files did not change); `unload` then `load` starts new stubs.
Reloading the dead model alone is not enough: the BLS calls its callers had sent it are never answered, and
a caller stub whose BLS calls hang stops serving new ones (after a scheduler kill with 300 requests in
flight, a third of later requests hung until their deadline). So the watchdog unloads the model and every
model that calls it (callers first; with strict readiness the server reports not ready from then on, and a
load balancer moves away), loads them again (callees first), and removes the dead stubs' shared-memory
regions. Requests that were waiting on the dead stub fail at once with UNAVAILABLE (trocr_serving.bls.ModelWatch).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trocr_client import protocol
from trocr_serving import scheduler_protocol as sp
from trocr_serving.stubs import StubProcess, remove_shm_region, stub_processes

if TYPE_CHECKING:
    from trocr_serving.launcher import TritonServer

LOGGER = logging.getLogger(__name__)
CHECK_INTERVAL_S = 0.5
# Who calls whom over BLS: a model is reloaded with its callers.
CALLERS = {"encoder": (sp.MODEL_NAME,), sp.MODEL_NAME: (protocol.MODEL_NAME,)}


def with_callers(model_name: str) -> list[str]:
    """The model and every model that calls it, directly or not, callers last."""
    order = [model_name]
    for name in order:
        order.extend(caller for caller in CALLERS.get(name, ()) if caller not in order)
    return order


@dataclass(frozen=True)
class Restart:
    model_names: tuple[str, ...]  # the dead stub's model, then its callers
    dead_instances: tuple[str, ...]
    seconds: float  # from noticing the dead stub to the model being ready again


class StubWatchdog:
    def __init__(self, server: TritonServer, interval_s: float = CHECK_INTERVAL_S):
        self.server = server
        self.interval_s = interval_s
        self.expected: set[str] = set()  # instance names seen once the server was ready
        self.shm_regions: set[str] = set()  # of every stub seen, for cleanup at stop
        self.restarts: list[Restart] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.expected = {stub.instance_name for stub in self._scan()}
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stub-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _scan(self) -> list[StubProcess]:
        stubs = stub_processes(self.server.process.pid)
        self.shm_regions.update(stub.shm_region for stub in stubs)
        return stubs

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.server.process.poll() is not None:
                return
            try:
                self.check()
            except Exception:
                LOGGER.exception("watchdog check failed")

    def check(self) -> list[Restart]:
        """Reload every model with a dead stub; returns what was restarted."""
        alive = {stub.instance_name for stub in self._scan()}
        dead_by_model: dict[str, list[str]] = {}
        for instance in sorted(self.expected - alive):
            dead_by_model.setdefault(instance.rsplit("_", 2)[0], []).append(instance)
        if not dead_by_model or self._stop.is_set():
            return []
        models: list[str] = []
        for model_name in dead_by_model:
            models.extend(name for name in with_callers(model_name) if name not in models)
        dead = tuple(instance for instances in dead_by_model.values() for instance in instances)
        return [self._reload(tuple(models), dead)]

    def _reload(self, models: tuple[str, ...], dead: tuple[str, ...]) -> Restart:
        LOGGER.error("stub process of %s died: reloading %s", ", ".join(dead), ", ".join(models))
        started = time.monotonic()
        regions_before = set(self.shm_regions)
        for model_name in reversed(models):
            self.server.model_control(model_name, "unload")
        for model_name in models:
            self.server.model_control(model_name, "load")
        live_regions = {stub.shm_region for stub in self._scan()}
        for region in regions_before - live_regions:
            remove_shm_region(region)
        restart = Restart(models, dead, time.monotonic() - started)
        LOGGER.warning("reloaded %s in %.1f s", ", ".join(models), restart.seconds)
        self.restarts.append(restart)
        return restart
