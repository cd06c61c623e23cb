"""What installing the packages asks of a user's environment, checked with pip's own resolver (pip reads the
package index: PyPI, reachable wherever the project installs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def resolve(tmp_path: Path, *requirements: str) -> dict[str, str]:
    """The versions pip would install for `requirements` in an empty environment (nothing is installed)."""
    report = tmp_path / "report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            *requirements,
        ],
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    return {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }


def test_the_client_alone_installs_beside_numpy_2(tmp_path):
    versions = resolve(tmp_path, ".", "numpy>=2")
    assert versions["numpy"].split(".")[0] == "2" and "trocr-triton" in versions
    assert "nvidia-pytriton" not in versions and "torch" not in versions  # serving and export stay in extras


def test_the_exporter_installs_with_transformers_5_and_without_optimum(tmp_path):
    versions = resolve(tmp_path, ".[serve,build]")
    assert versions["transformers"].split(".")[0] == "5"
    assert not any(name.startswith("optimum") for name in versions)
    assert "faker" not in versions and "fonttools" not in versions  # training's: the `train` extra


def test_training_brings_its_own_dependencies(tmp_path):
    versions = resolve(tmp_path, ".[serve,build,train]")
    assert "faker" in versions and "fonttools" in versions
