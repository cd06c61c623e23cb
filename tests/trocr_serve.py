"""`trocr-serve` as an operator runs it: a subprocess on ports the test picked, its log in a file."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from trocr_serving.launcher.server import Ports


@dataclass
class Launcher:
    process: subprocess.Popen
    ports: Ports
    log: Path

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def server_pid(self) -> int | None:
        """The tritonserver this launcher runs now (its only live child)."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.process.pid and fields[0] != "Z":
                    return int(entry.name)
        return None

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def start_trocr_serve(repository: Path, log: Path, exit_timeout_s: int) -> Launcher:
    ports = Ports.pick("127.0.0.1")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trocr_serving.launcher.cli",
            f"--model-repository={repository}",
            f"--http-port={ports.http}",
            f"--grpc-port={ports.grpc}",
            f"--metrics-port={ports.metrics}",
            f"--exit-timeout-s={exit_timeout_s}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Launcher(process, ports, log)
