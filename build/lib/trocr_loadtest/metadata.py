"""What a load-test result was measured on: the server and its models' configs (as the server reports
them, so a remote server describes itself), the build of a local repository, this code's revision, the
load generator's machine, and the command line."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import tritonclient.grpc as grpcclient
from google.protobuf.json_format import MessageToDict

from trocr_client import protocol
from trocr_serving.pipeline_config import BUILD_INFO_FILE

# The models of the public path; the scheduler's config holds the serving bounds.
MODELS = (protocol.MODEL_NAME, "scheduler")
SOURCE_DIR = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=SOURCE_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_revision() -> dict:
    try:
        version = importlib.metadata.version("trocr-triton")
    except importlib.metadata.PackageNotFoundError:
        version = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "version": version,
        "git_revision": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }


def machine() -> dict:
    cpu_model = None
    memory_gib = None
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        cpu_model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), None
        )
        meminfo = Path("/proc/meminfo").read_text().split()
        memory_gib = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": memory_gib,
    }


def server(url: str) -> dict:
    """Triton's metadata and the configs of the public path's models, as served (absent ones are skipped)."""
    info: dict = {"url": url}
    with grpcclient.InferenceServerClient(url) as client:
        info["server"] = MessageToDict(client.get_server_metadata())
        configs = {}
        for name in MODELS:
            try:
                configs[name] = MessageToDict(client.get_model_config(name).config)
            except Exception as exc:  # a model the server does not have, or a config it will not show
                configs[name] = {"error": str(exc)}
        info["model_configs"] = configs
    parameters = configs.get(protocol.MODEL_NAME, {}).get("parameters", {})
    for name in ("model", "precision"):  # what the build wrote into the public model's parameters
        info[name] = parameters.get(name, {}).get("stringValue")
    return info


def build_info(repository: Path | None) -> dict | None:
    path = repository / BUILD_INFO_FILE if repository else None
    return json.loads(path.read_text()) if path and path.exists() else None


def run_metadata(url: str, repository: Path | None, argv: list[str]) -> dict:
    return {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": argv,
        "code": code_revision(),
        "load_generator_machine": machine(),
        **server(url),
        "build": build_info(repository),
    }
