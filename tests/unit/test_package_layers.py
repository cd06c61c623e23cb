"""The packages form layers, each importing only those below it, so no package cycle exists: the client at the
bottom, then what runs in the server, then the build side (exporter, demo, training), then the load tests. The
training's own dependencies (the `train` extra) stay inside trocr_build.training."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {  # package -> its folder; each may import the packages listed before it
    "trocr_client": ROOT / "client" / "trocr_client",
    "trocr_serving": ROOT / "model_repository" / "trocr_serving",
    "trocr_build": ROOT / "build" / "trocr_build",
    "trocr_loadtest": ROOT / "loadtest" / "trocr_loadtest",
}
TRAIN_EXTRA_MODULES = {"faker", "fontTools"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", list(LAYERS))
def test_a_package_imports_only_the_packages_below_it(package):
    order = list(LAYERS)
    above = set(order[order.index(package) + 1 :])
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in LAYERS[package].rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] in above
    }
    assert not wrong, sorted(wrong)


def test_only_the_training_needs_the_train_extra():
    training = LAYERS["trocr_build"] / "training"
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for folder in LAYERS.values()
        for path in folder.rglob("*.py")
        if training not in path.parents
        for name in imported_modules(path)
        if name.split(".")[0] in TRAIN_EXTRA_MODULES
    }
    assert not wrong, sorted(wrong)
