"""Models the tests build themselves (random weights) or find shipped: no network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from transformers import VisionEncoderDecoderModel

from trocr_build.reference import reference_processor
from trocr_build.repository import build_repository


@dataclass
class Built:
    repository: Path
    model: VisionEncoderDecoderModel
    processor: object
    info: dict  # build_info.json


def _build(model_name: str, tmp_path_factory) -> Built:
    cache = tmp_path_factory.getbasetemp() / "models"
    repository = tmp_path_factory.mktemp(model_name.replace(":", "-"))
    info = build_repository(model_name, repository, cache_dir=cache)
    model = VisionEncoderDecoderModel.from_pretrained(info["source"]).eval()
    return Built(repository, model, reference_processor(info["source"]), info)


@pytest.fixture(scope="session")
def built_tiny(tmp_path_factory) -> Built:
    return _build("random:tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def built_small(tmp_path_factory) -> Built:
    return _build("random:small", tmp_path_factory)


@pytest.fixture(scope="session")
def built_synthetic(tmp_path_factory) -> Built:
    """The trained model shipped in the package (`trocr-train`'s weights)."""
    return _build("synthetic:small", tmp_path_factory)


def pytest_collection_modifyitems(items):
    """Two lanes: `-m "not slow"` (unit tests, under a minute here) for the edit loop, the whole suite in CI."""
    for item in items:
        if item.get_closest_marker("integration") is not None:
            item.add_marker(pytest.mark.slow)
