"""Turn what callers have (paths, bytes, PIL images, numpy arrays) into encoded image bytes."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trocr_client.errors import InvalidInputError
from trocr_client.protocol import MAX_IMAGE_BYTES

ImageLike = str | os.PathLike | bytes | bytearray | Image.Image | np.ndarray
# Handwriting-like sample lines in varied formats and sizes: the demo's images, the build's check of a
# precision variant, the load test's and the tests' inputs.
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
SAMPLES_MANIFEST = "samples.jsonl"  # {"path": <file in SAMPLES_DIR>, "text": <what it shows>, "source": ...} per line


@dataclass(frozen=True)
class Sample:
    path: Path
    text: str  # what the image shows


def samples() -> list[Sample]:
    """The sample images with their true texts: handwriting (trocr_build.training.samples made them)."""
    entries = [json.loads(line) for line in (SAMPLES_DIR / SAMPLES_MANIFEST).read_text().splitlines() if line]
    return sorted((Sample(SAMPLES_DIR / e["path"], e["text"]) for e in entries), key=lambda sample: sample.path)


def sample_paths() -> list[Path]:
    return [sample.path for sample in samples()]


def encode_image(image: ImageLike) -> bytes:
    """Encoded bytes for one image; files and bytes are sent as they are, pixels are encoded as PNG."""
    if isinstance(image, str | os.PathLike):
        try:
            with open(image, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise InvalidInputError(f"{image}: cannot read it: {exc.strerror or exc}") from None
    elif isinstance(image, bytes | bytearray):
        data = bytes(image)
    elif isinstance(image, Image.Image):
        data = _png(image)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise InvalidInputError(
                f"numpy image must be uint8 HxW, HxWx1, HxWx3 or HxWx4; got {image.dtype} {image.shape}"
            )
        data = _png(Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image))
    else:
        raise InvalidInputError(f"cannot send a {type(image).__name__} as an image")
    if not data:
        raise InvalidInputError("empty image (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidInputError(f"image of {len(data)} bytes exceeds the limit of {MAX_IMAGE_BYTES} bytes")
    return data


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
