"""The Python-backend stub processes of a running Triton server, read from /proc (Linux).

Triton 2.51 neither restarts a stub that died nor reports it: the model stays "ready", requests sent to it
fail with INTERNAL "Stub process '<instance>' is not healthy", and requests it held never get an answer.
Both the launcher's watchdog (which reloads the model) and the models that await another model over BLS
(which stop waiting) need to see a stub die, so they read the stubs' command lines here:

    triton_python_backend_stub <model.py> <shm region> <shm size> <shm growth> <server pid> <backend dir>
                               <ipc handle> <instance name> <runtime> ...
"""

from __future__ import annotations

# WAR(2.51): dead stubs are neither restarted nor reported (module docstring), so the launcher's watchdog and
# the BLS callers watch the stub processes themselves. Fixed in: 2.65 (26.01), python_backend PR #423 with
# core PR #461 (server_release.STUB_READINESS: both then ask the server); the stub list stays for removing
# the shared-memory regions of dead stubs, and the watchdog as the restart of last resort.
import os
from dataclasses import dataclass
from pathlib import Path

STUB_BINARY = "triton_python_backend_stub"
_SHM_REGION_ARG = 2
_INSTANCE_NAME_ARG = 8
PROC = Path("/proc")
SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class StubProcess:
    pid: int
    instance_name: str  # "<model>_<group>_<index>", e.g. "scheduler_0_0"
    shm_region: str  # the shared-memory region the stub shares with the server, under /dev/shm
    start_ticks: int  # start time in clock ticks since boot: tells a reused pid apart

    @property
    def model_name(self) -> str:
        return self.instance_name.rsplit("_", 2)[0]

    def is_alive(self) -> bool:
        """Still running (a zombie left for its parent to reap counts as dead)."""
        stat = _stat(self.pid)
        return stat is not None and stat[2] == self.start_ticks and stat[0] != "Z"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in ticks) of a process, or None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def _stub_argv(process: str) -> list[str] | None:
    """The command line of a process ("<pid>" or "self") if it is a backend stub, else None."""
    try:
        argv = (PROC / process / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if len(argv) <= _INSTANCE_NAME_ARG or not argv[0].endswith(STUB_BINARY):
        return None
    return argv


def _stub(pid: int, server_pid: int) -> StubProcess | None:
    stat = _stat(pid)
    if stat is None or stat[1] != server_pid or stat[0] == "Z":
        return None
    argv = _stub_argv(str(pid))
    if argv is None:
        return None
    return StubProcess(pid, argv[_INSTANCE_NAME_ARG], argv[_SHM_REGION_ARG], stat[2])


def stub_processes(server_pid: int) -> list[StubProcess]:
    """The live stubs the server with this pid started."""
    stubs = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stub = _stub(int(entry.name), server_pid)
            if stub is not None:
                stubs.append(stub)
    return stubs


def model_stubs(model_name: str, server_pid: int | None = None) -> list[StubProcess]:
    """The stubs of one model; from inside a stub, the server is the parent process."""
    server_pid = os.getppid() if server_pid is None else server_pid
    return [stub for stub in stub_processes(server_pid) if stub.model_name == model_name]


# The Python backend creates each stub's region -rw-r--r-- (boost sets the mode itself: the umask does not apply),
# and the region holds request images and results.
SHM_REGION_MODE = 0o600


def restrict_own_shm_region() -> None:
    """From inside a stub, as its model loads (before it serves): its region readable by the server's user only."""
    argv = _stub_argv("self")
    if argv is not None:
        os.chmod(SHM_DIR / argv[_SHM_REGION_ARG], SHM_REGION_MODE)


def remove_shm_region(name: str) -> bool:
    """Remove a dead stub's shared-memory region (the server does not when a stub is killed)."""
    path = SHM_DIR / name
    if not name or "/" in name or not path.exists():
        return False
    path.unlink()
    return True
