"""The sample images `trocr-demo` transcribes (client/trocr_client/samples/, with their true texts in
`samples.jsonl`): handwriting the shipped model was not trained on. Lines in the two handwriting fonts no training
line uses (synthetic_lines.HELD_OUT_FONTS), and lines of real handwritten digits composed from MNIST digits kept
out of training (digits.py). Each in one of the formats the server decodes (JPEG, PNG gray and RGB, palette BMP,
WebP, TIFF with alpha).

    python -m trocr_build.training.samples     # writes them anew (needs the `train` extra and the fonts)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

from trocr_build.training.digits import Digits, compose_line
from trocr_build.training.synthetic_lines import LineRenderer, load_fonts
from trocr_client.images import SAMPLES_DIR, SAMPLES_MANIFEST

SAVE_OPTIONS = {".jpg": {"quality": 90}, ".webp": {"quality": 90}, ".tiff": {"compression": "tiff_deflate"}}
SEED = 2026
FONT_SIZES = (34, 40)
# (file name, font stem or "digits", text, how the image is stored)
SAMPLES = (
    ("kaushan_gray.jpg", "KaushanScript-Regular", "Meet me at the station", "L"),
    ("kaushan_rgb.png", "KaushanScript-Regular", "Invoice paid in full", "RGB"),
    ("humor_palette.bmp", "Humor-Sans", "THE QUICK BROWN FOX", "P"),
    ("humor_rgb.webp", "Humor-Sans", "TRITON SERVES TROCR", "RGB"),
    ("digits_gray.png", "digits", "6606 768 61182", "L"),
    ("digits_rgba.tiff", "digits", "12 03 1987", "RGBA"),
    ("digits_rgb.jpg", "digits", "4521 0093 7714", "RGB"),
    ("digits_rgb.webp", "digits", "31 10 2026", "RGB"),
)


def write_samples(folder: Path = SAMPLES_DIR) -> None:
    _, held_out_fonts = load_fonts()
    fonts = {path.stem: path for path in held_out_fonts}
    renderer = LineRenderer(list(fonts.values()), SEED, FONT_SIZES)
    digits = Digits.load().split(held_out=True)
    rng = random.Random(SEED)
    for stale in folder.iterdir():
        if stale.is_file() and stale.name != "__init__.py":
            stale.unlink()
    entries = []
    for name, source, text, mode in SAMPLES:
        image = compose_line(text, digits, rng) if source == "digits" else renderer.render(text, fonts[source])
        stored: Image.Image = image.convert("RGB").quantize(64) if mode == "P" else image.convert(mode)
        stored.save(folder / name, **SAVE_OPTIONS.get(Path(name).suffix, {}))
        entries.append({"path": name, "text": text, "source": source})
    (folder / SAMPLES_MANIFEST).write_text("".join(json.dumps(entry) + "\n" for entry in entries))


if __name__ == "__main__":
    write_samples()
