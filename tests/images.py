"""Test images: the repository's samples plus generated text lines, and broken inputs."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from trocr_client.images import sample_paths  # noqa: F401 (the tests' import of it)


def text_line(text: str, width: int = 320, height: int = 48, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    image = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(image).text((8, height // 3), text, fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def truncated_png() -> bytes:
    data = text_line("truncated")
    return data[: len(data) // 2]


NOT_AN_IMAGE = b"this is plain text, not an image"
