"""The CPU image's Python layer, installed here as the image installs it: Python 3.12 (NVIDIA's Triton 26.09
container's), the project's `serve-container-cpu` extra under deploy/docker/constraints-cpu.txt (every
package at its pinned version, from PyPI). In that environment the engine runs a repository built here and
must give `generate()`'s tokens, greedy and beam. What this cannot check: the container's own tritonserver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.reference import reference_generate
from tests.source_tree import copy_source
from tests.unit.test_dockerfile import constraints_path, pinned_versions
from trocr_client.images import sample_paths

pytestmark = pytest.mark.integration
CONSTRAINTS = constraints_path("cpu")
IMAGE_PYTHON = "3.12"  # the Triton 26.09 container's (Ubuntu 24.04)


def find_python(version: str) -> str | None:
    """An interpreter of `version` that runs: on the PATH, or one of pyenv's (whose shim may not select it)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [
        shutil.which(f"python{version}"),
        *sorted(str(p) for p in pyenv.glob(f"{version}*/bin/python{version}")),
    ]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(int(n) for n in version.split("."))):
            return candidate
    return None


@pytest.fixture(scope="module")
def image_python(tmp_path_factory) -> Path:
    interpreter = find_python(IMAGE_PYTHON)
    assert interpreter, f"Python {IMAGE_PYTHON} is needed to check the images' Python layer (pyenv has it here)"
    venv = tmp_path_factory.mktemp("image-env") / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    source = copy_source(tmp_path_factory.mktemp("image-src") / "trocr-triton")
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--constraint",
            str(CONSTRAINTS),
            f"{source}[serve-container-cpu]",
        ],
        check=True,
        timeout=900,
    )
    return python


def run_engine(python: Path, repository: Path, max_new_tokens: int, num_beams: int) -> dict:
    script = Path(__file__).resolve().parents[1] / "image_env" / "run_engine.py"
    done = subprocess.run(
        [str(python), str(script), str(repository), str(max_new_tokens), str(num_beams)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
        cwd="/",  # nothing of this checkout on its path: the installed packages only
    )
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_the_engine_on_the_images_pinned_packages_matches_generate(image_python, built_tiny, num_beams):
    ran = run_engine(image_python, built_tiny.repository, 12, num_beams)
    expected = pinned_versions("cpu")
    assert ran["versions"] == {"python": [3, 12], "numpy": expected["numpy"], "onnxruntime": expected["onnxruntime"]}
    data = [path.read_bytes() for path in sample_paths()]
    references = reference_generate(built_tiny.model, built_tiny.processor, data, 12, num_beams=num_beams)
    assert ran["tokens"] == [reference.token_ids for reference in references]
