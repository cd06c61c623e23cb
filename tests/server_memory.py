"""The memory a running server holds: resident memory of tritonserver and its stubs, and their shared memory."""

from __future__ import annotations

from pathlib import Path

from trocr_serving.launcher.server import TritonServer
from trocr_serving.stubs import SHM_DIR, stub_processes


def rss_bytes(server: TritonServer) -> int:
    """Resident memory of tritonserver and all its stubs."""
    total = 0
    for pid in [server.process.pid, *(stub.pid for stub in stub_processes(server.process.pid))]:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def shm_bytes(server: TritonServer) -> int:
    regions = {stub.shm_region for stub in stub_processes(server.process.pid)}
    return sum((SHM_DIR / region).stat().st_blocks * 512 for region in regions if (SHM_DIR / region).exists())
