"""Images to send: the repository's samples, a directory, or generated text lines of varied sizes."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from trocr_client.images import sample_paths

WORDS = "the quick brown fox jumps over lazy dog serving triton handwriting model batch".split()  # noqa: SIM905


def from_directory(directory: Path) -> list[bytes]:
    paths = sorted(p for p in Path(directory).iterdir() if p.is_file())
    if not paths:
        raise ValueError(f"no images in {directory}")
    return [p.read_bytes() for p in paths]


def generated(count: int, seed: int = 0) -> list[bytes]:
    """Text lines of 2-8 words, 24-48 px type, on slightly varied backgrounds, as PNG."""
    rng = random.Random(seed)
    images = []
    for _ in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))
        font = ImageFont.load_default(size=rng.randint(24, 48))
        width = int(font.getlength(text)) + rng.randint(10, 60)
        height = int(font.size * 1.6)
        shade = rng.randint(225, 255)
        image = Image.new("L", (width, height), shade)
        ImageDraw.Draw(image).text((rng.randint(4, 20), font.size // 4), text, fill=rng.randint(0, 60), font=font)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def samples() -> list[bytes]:
    """The handwritten sample images (not their manifest)."""
    return [path.read_bytes() for path in sample_paths()]


def image_set(source: str = "samples+generated", count: int = 32) -> list[bytes]:
    """'samples', 'generated', 'samples+generated', or a directory path."""
    if source == "samples":
        return samples()
    if source == "generated":
        return generated(count)
    if source == "samples+generated":
        return samples() + generated(max(0, count - len(samples())))
    return from_directory(Path(source))
