"""Models trained here by `trocr-train` (`synthetic:<name>`, kept in the cache folder), and the one place that
turns a model name (Hugging Face id, local directory, random:<name>, synthetic:<name>) into what
`from_pretrained` loads."""

from __future__ import annotations

from pathlib import Path

from trocr_build.random_model import is_random_model, random_model_dir
from trocr_serving import paths

SYNTHETIC_PREFIX = "synthetic:"


def synthetic_models_dir() -> Path:
    return paths.cache_dir() / "synthetic-models"


def synthetic_model_dir(model: str) -> Path:
    name = model.removeprefix(SYNTHETIC_PREFIX)
    directory = synthetic_models_dir() / name
    if not (directory / "model.safetensors").exists():
        trained = sorted(p.parent.name for p in synthetic_models_dir().glob("*/model.safetensors"))
        raise ValueError(
            f"unknown model {model!r}: trocr-train has made {trained or 'none'} in {synthetic_models_dir()}"
        )
    return directory


def resolve_model(model: str, cache_dir: Path | None = None) -> str:
    """What `from_pretrained` loads for a model name."""
    if is_random_model(model):
        return str(random_model_dir(model, cache_dir))
    if model.startswith(SYNTHETIC_PREFIX):
        return str(synthetic_model_dir(model))
    return model
