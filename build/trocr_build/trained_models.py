"""Models trained here by `trocr-train` (`synthetic:<name>`), and the one place that turns a model name (Hugging
Face id, local directory, random:<name>, synthetic:<name>) into what `from_pretrained` loads.

A `synthetic:<name>` is looked up first among the models `trocr-train` wrote into the cache folder (a user's own
training wins), then among the models shipped with the training (`training/models/`, with their `training.json`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from trocr_build.random_model import is_random_model, random_model_dir
from trocr_build.training import SHIPPED_MODELS_DIR
from trocr_serving import paths

SYNTHETIC_PREFIX = "synthetic:"
WEIGHTS_FILE = "model.safetensors"


def synthetic_models_dir(cache_dir: Path | None = None) -> Path:
    """Where `trocr-train` writes."""
    return (cache_dir or paths.cache_dir()) / "synthetic-models"


def synthetic_model_dir(model: str, cache_dir: Path | None = None) -> Path:
    name = model.removeprefix(SYNTHETIC_PREFIX)
    trained = synthetic_models_dir(cache_dir)
    for folder in (trained, SHIPPED_MODELS_DIR):
        if (folder / name / WEIGHTS_FILE).exists():
            return folder / name
    known = sorted({p.parent.name for d in (trained, SHIPPED_MODELS_DIR) for p in d.glob(f"*/{WEIGHTS_FILE}")})
    raise ValueError(f"unknown model {model!r}: shipped or made by trocr-train in {trained}: {known or 'none'}")


def resolve_model(model: str, cache_dir: Path | None = None) -> str:
    """What `from_pretrained` loads for a model name."""
    if is_random_model(model):
        return str(random_model_dir(model, cache_dir))
    if model.startswith(SYNTHETIC_PREFIX):
        return str(synthetic_model_dir(model, cache_dir))
    return model


def weights_digest(source: str) -> str | None:
    """SHA-256 of a local model folder's weights (a folder's weights change when it is trained again; a built
    repository of the old weights is then stale); None for a hub id."""
    weights = Path(source) / WEIGHTS_FILE
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None
