"""A copy of this checkout to install from: pip builds a non-editable install inside the source tree (setuptools'
build/lib), which must not land in the checkout, whose top-level build/ is the exporter's package."""

from __future__ import annotations

import shutil
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1]
NOT_COPIED = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "loadtest-results", "dist", "tests")


def copy_source(destination: Path) -> Path:
    shutil.copytree(SOURCE, destination, ignore=NOT_COPIED)
    return destination
