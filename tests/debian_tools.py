"""Programs the tests need from Debian packages (promtool, nginx): the installed one if it is on PATH, else the
package's files extracted into the cache (`apt-get download` + `dpkg -x`: no root needed, no maintainer
scripts, so no service starts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from trocr_serving.paths import cache_dir


def debian_tool(package: str, path: str) -> Path:
    """`path` (e.g. usr/bin/promtool) of Debian's `package`."""
    installed = shutil.which(Path(path).name)
    if installed:
        return Path(installed)
    root = cache_dir() / "debian-tools" / package
    if not (root / path).exists():
        if not (shutil.which("apt-get") and shutil.which("dpkg")):
            pytest.fail(f"{Path(path).name} is needed: install the Debian package {package}")
        with tempfile.TemporaryDirectory() as download:
            fetch = ["apt-get", "download", "-q", package]
            if subprocess.run(fetch, cwd=download, capture_output=True).returncode != 0 and os.geteuid() == 0:
                subprocess.run(["apt-get", "update", "-q"], capture_output=True)  # stale package lists
            subprocess.run(fetch, cwd=download, capture_output=True, check=True)
            (deb,) = Path(download).glob(f"{package}_*.deb")
            root.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root / path
