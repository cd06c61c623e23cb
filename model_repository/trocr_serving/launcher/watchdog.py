"""The launcher's watchdog: when a model's stub process or the server dies, the server is started again.

Measured on Triton 2.51 (`kill -9` of a stub, 12 clients in flight, random:tiny):
- Nothing restarts the stub; the model and the server stay "ready"; later requests to that instance fail
  ("Stub process '<instance>' is not healthy") and requests the stub held are never answered.
- `load` of the loaded model does nothing (no file changed); `unload` + `load` starts new stubs, but the BLS
  calls callers had sent the dead stub are never answered, and a caller whose BLS calls hang stops serving
  new ones (after a scheduler kill, a third of later requests hung until their deadline). Reloading the
  callers too (a hot swap: the model's config sent back with a new parameter) healed that, but unloading the
  public model waits for the requests its dead stub held, which never end, and after two rounds of reloads
  tritonserver crashed (SIGSEGV) while old copies of the BLS-calling models unloaded.
- Killing a stub can also abort tritonserver itself (boost::interprocess::lock_exception: the stub died
  holding a lock in the memory it shares with the server).
From Triton 2.65 (26.01, server_release.STUB_READINESS) the server notices a dead stub itself: the model is
no longer ready. The watchdog then asks the server, not /proc, but still restarts it: no release restarts a stub.
So the watchdog restarts the whole server on the same ports: it is not ready (its ports refuse connections)
until every model is loaded again, every request in flight fails at once with UNAVAILABLE (none waits for its
deadline), and the dead stubs' shared-memory regions are removed. Requests waiting on a dead stub inside the
server fail at once too (trocr_serving.triton_adapters.bls.ModelCaller), before the restart.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trocr_serving.server_release import STUB_READINESS
from trocr_serving.stubs import StubProcess

if TYPE_CHECKING:
    from trocr_serving.launcher.server import TritonServer

LOGGER = logging.getLogger(__name__)
CHECK_INTERVAL_S = 0.5
# Starts tried after a death before the watchdog gives up (then `trocr-serve` exits non-zero, so that an
# orchestrator replaces the pod): a start fails when the ports were taken meanwhile, or Triton 2.51 crashed while
# starting (SIGSEGV seen once in CI).
MAX_START_ATTEMPTS = 3


@dataclass(frozen=True)
class Restart:
    cause: str  # the dead stubs' instance names, or "tritonserver exited with code N"
    seconds: float  # from noticing the death to the server being ready again


class StubWatchdog:
    def __init__(self, server: TritonServer, interval_s: float = CHECK_INTERVAL_S):
        self.server = server
        self.interval_s = interval_s
        self.stubs: dict[str, StubProcess] = {}  # instance name -> its stub, as seen once the server was ready
        self.restarts: list[Restart] = []
        self.gave_up: str | None = None  # why the server stays down: every start after a death failed
        self._stop = threading.Event()
        # The thread outlives its checks until the server has exited: a server it relaunched got the launcher's
        # parent-death signal, which Linux sends when the thread that started the process ends.
        self._release = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.gave_up = None
        self._take_stock()
        self._stop.clear()
        self._release.clear()
        self._thread = threading.Thread(target=self._run, name="stub-watchdog", daemon=True)
        self._thread.start()

    def stop(self, join: bool = True) -> None:
        """No checks from now on; `join` (once the server has exited) also ends the thread."""
        self._stop.set()
        if join and self._thread is not None:
            self._release.set()
            self._thread.join()
            self._thread = None

    def _take_stock(self) -> None:
        self.stubs = {stub.instance_name: stub for stub in self.server.record_shm_regions()}

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                cause = self.check()
                if cause and not self._stop.is_set():
                    self._restart(cause)
            except Exception:
                LOGGER.exception("watchdog failed")
        self._release.wait()

    def check(self) -> str | None:
        """What died since the server was ready, or None."""
        code = self.server.process.poll()
        if code is not None:
            return f"tritonserver exited with code {code}"
        if self.server.release.has(STUB_READINESS):
            unready = self.server.unready_models()
            return f"{', '.join(unready)} no longer ready (a stub died?)" if unready else None
        # WAR(2.51): the server reports a model whose stub died as ready (stubs.py), so the stubs are watched.
        # Fixed in: 2.65 (26.01), python_backend PR #423 and core PR #461 (server_release.STUB_READINESS).
        dead = sorted(name for name, stub in self.stubs.items() if not stub.is_alive())
        return f"stub process of {', '.join(dead)} died" if dead else None

    def _restart(self, cause: str) -> None:
        from trocr_serving.launcher.server import ServerError  # the launcher imports this module

        LOGGER.error("%s: restarting tritonserver\n%s", cause, self.server.log_tail(20))
        started = time.monotonic()
        for attempt in range(1, MAX_START_ATTEMPTS + 1):
            try:
                self.server.relaunch()
                break
            except ServerError as exc:
                if self._stop.is_set():
                    return
                LOGGER.error("start %d of %d after '%s' failed: %s", attempt, MAX_START_ATTEMPTS, cause, exc)
        else:
            self.gave_up = f"{cause}; the {MAX_START_ATTEMPTS} starts after it failed"
            LOGGER.error("tritonserver stays down: %s", self.gave_up)
            self._stop.set()
            return
        self.server.remove_dead_shm_regions()
        self._take_stock()
        restart = Restart(cause, time.monotonic() - started)
        LOGGER.warning("tritonserver restarted and ready in %.1f s", restart.seconds)
        self.restarts.append(restart)
