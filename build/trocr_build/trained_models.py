"""Models trained here and shipped in the package (`synthetic:small`), and the one place that turns a model name
(Hugging Face id, local directory, random:<name>, synthetic:<name>) into a directory or hub id."""

from __future__ import annotations

from pathlib import Path

from trocr_build.random_model import is_random_model, random_model_dir

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_MODELS_DIR = Path(__file__).parent / "synthetic_models"


def synthetic_model_dir(model: str) -> Path:
    name = model.removeprefix(SYNTHETIC_PREFIX)
    directory = SYNTHETIC_MODELS_DIR / name
    if not (directory / "model.safetensors").exists():
        shipped = sorted(p.name for p in SYNTHETIC_MODELS_DIR.glob("*/model.safetensors"))
        raise ValueError(f"unknown model {model!r}: the trained models shipped are {shipped or 'none'}")
    return directory


def resolve_model(model: str, cache_dir: Path | None = None) -> str:
    """What `from_pretrained` loads for a model name."""
    if is_random_model(model):
        return str(random_model_dir(model, cache_dir))
    if model.startswith(SYNTHETIC_PREFIX):
        return str(synthetic_model_dir(model))
    return model
