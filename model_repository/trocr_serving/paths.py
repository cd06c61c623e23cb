"""Where the project's generated files go, the same for a source checkout and a wheel install: one cache folder
(models made here, and the model repository `trocr-build` writes by default), and the models' `model.py` files
that the build copies into a repository (package data)."""

from __future__ import annotations

import os
from pathlib import Path

MODEL_FILES_DIR = Path(__file__).parent / "triton_adapters" / "models"  # <model>.py -> <repository>/<model>/1/model.py


def cache_dir() -> Path:
    return Path(os.environ.get("TROCR_TRITON_CACHE", Path.home() / ".cache" / "trocr-triton"))


def default_repository() -> Path:
    """The model repository `trocr-build` writes and `trocr-serve` serves when given none."""
    return Path(os.environ.get("TROCR_TRITON_REPOSITORY", cache_dir() / "repository"))


def demo_repository() -> Path:
    """The small repository `trocr-demo` builds and serves (apart from the default one, which it leaves as it is)."""
    return cache_dir() / "demo-repository"
