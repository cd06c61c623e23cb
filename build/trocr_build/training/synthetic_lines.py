"""Synthetic handwriting-like text lines: text from Faker and random characters, rendered with fonts that install
offline (Debian's OFL handwriting and script fonts, DejaVu), with the variation of a scanned or photographed line.

The fonts are named (a machine's other fonts are not used, so a training run is the same everywhere). The
fonts of `HELD_OUT_FONTS`, two families no training line uses, render the held-out set only. Fonts that draw
lower-case letters as capitals have their text upper-cased: a label says what the image shows.
"""

from __future__ import annotations

import io
import random
import shutil
import string
import subprocess
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Debian packages of handwriting, script and informal fonts (OFL or similar), plus DejaVu for print.
FONT_PACKAGES = (
    "fonts-dkg-handwriting",
    "fonts-bwht",
    "fonts-dancingscript",
    "fonts-kristi",
    "fonts-kaushanscript",
    "fonts-humor-sans",
    "fonts-comic-neue",
    "fonts-ecolier-court",
    "fonts-joscelyn",
    "fonts-dejavu-core",
    "fonts-dejavu-extra",
)
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
_DEJAVU = ("Sans", "Serif", "SansCondensed", "SerifCondensed", "SansMono")
_BWHT = tuple(f"BecauseWe{name}-Regular" for name in ("Build", "Connect", "Create", "Learn", "Mentor", "Organize"))
TRAINING_FONTS = (
    *(f"dkg{style}" for style in ("", "BI", "Bd", "It")),
    "DancingScript-Regular",
    "DancingScript-Bold",
    "Kristi",
    "Ecolier-court",
    *(f"ComicNeue-{style}" for style in ("Regular", "Bold", "Italic", "BoldItalic", "Light", "LightItalic")),
    *_BWHT,
    *(f"DejaVu{family}" for family in _DEJAVU),
    *(f"DejaVu{family}-Bold" for family in _DEJAVU),
    "DejaVuSans-Oblique",
    "DejaVuSerif-Italic",
    "DejaVuSans-ExtraLight",
)
# Kept for evaluation: two handwriting-like families unlike any in training (a brush script; xkcd's hand).
HELD_OUT_FONTS = ("KaushanScript-Regular", "Humor-Sans")
# Fonts that draw lower-case letters as (small) capitals: their lines are upper-cased.
CAPITALS_FONTS = (*_BWHT, "Humor-Sans")

CHARSET = string.ascii_letters + string.digits + " .,;:!?'\"-()&/#%+*=@$"
MIN_CHARS = 3
MAX_CHARS = 26
FIRST_DATE, LAST_DATE = date(1950, 1, 1), date(2025, 12, 31)


class FontsMissingError(RuntimeError):
    pass


def _missing(fonts: dict[str, Path]) -> list[str]:
    return [name for name in (*TRAINING_FONTS, *HELD_OUT_FONTS) if name not in fonts]


def install_fonts() -> None:
    """Install the Debian font packages if some are missing and apt is there (as root; package lists refreshed
    if the first try fails). Without apt, split_fonts() names the packages to install."""
    if not _missing(find_fonts()) or shutil.which("apt-get") is None:
        return
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *FONT_PACKAGES]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False}
    if subprocess.run(install, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], **quiet)
        subprocess.run(install, **quiet)


def find_fonts() -> dict[str, Path]:
    """The .ttf/.otf files under the system font folders, by file stem."""
    fonts = {}
    for directory in FONT_DIRS:
        for path in sorted(directory.rglob("*")):
            if path.suffix.lower() in (".ttf", ".otf"):
                fonts.setdefault(path.stem, path)
    return fonts


def split_fonts(fonts: dict[str, Path]) -> tuple[list[Path], list[Path]]:
    """(training fonts, held-out fonts), as named; fails naming what is missing."""
    missing = _missing(fonts)
    if missing:
        raise FontsMissingError(
            f"fonts missing: {', '.join(missing)}: install the Debian packages {' '.join(FONT_PACKAGES)}"
        )
    return [fonts[name] for name in TRAINING_FONTS], [fonts[name] for name in HELD_OUT_FONTS]


def load_fonts() -> tuple[list[Path], list[Path]]:
    """(training fonts, held-out fonts), installed first where they can be."""
    install_fonts()
    return split_fonts(find_fonts())


@cache
def font_charset(path: Path) -> frozenset[str]:
    """The characters of CHARSET that the font draws (its cmap maps them to a glyph)."""
    with TTFont(path, lazy=True) as font:
        cmap = font.getBestCmap() or {}
    return frozenset(char for char in CHARSET if ord(char) in cmap or char == " ")


class TextSource:
    """Lines of 3-26 characters: Faker's English words, names, addresses, dates and numbers, and random strings."""

    def __init__(self, seed: int):
        from faker import Faker

        self.max_chars = MAX_CHARS  # lowered early in training (a curriculum from short lines to long)
        self.random = random.Random(seed)
        self.faker = Faker("en_US")
        self.faker.seed_instance(seed)
        self.weights, self.makers = zip(
            *(
                (0.35, lambda: self.faker.sentence(nb_words=6)),
                (0.10, lambda: " ".join(self.faker.words(nb=4)).title()),
                (0.12, self.faker.name),
                (0.10, self.faker.street_address),
                (0.05, self.faker.city),
                (0.06, self._date),
                (0.04, self.faker.phone_number),
                (0.18, self._random_string),
            )
        )

    def _date(self) -> str:
        """A date in one of three formats; between fixed dates (Faker's own `date()` ends today, so the lines, and
        the held-out set, would change from day to day)."""
        day = self.faker.date_between_dates(date_start=FIRST_DATE, date_end=LAST_DATE)
        return day.strftime(self.random.choice(("%d/%m/%Y", "%B %d, %Y", "%Y-%m-%d")))

    def _random_string(self) -> str:
        length = self.random.randint(MIN_CHARS, self.max_chars)
        words = []
        while sum(len(word) + 1 for word in words) < length:
            words.append("".join(self.random.choices(CHARSET.replace(" ", ""), k=self.random.randint(1, 8))))
        return " ".join(words)

    def line(self, charset: frozenset[str], capitals: bool = False) -> str:
        limit = self.max_chars
        while True:
            text = self.random.choices(self.makers, self.weights)[0]()
            text = " ".join(text.split())
            if len(text) > limit:  # cut at a word boundary
                text = text[: text.rfind(" ", 0, limit + 1)].rstrip() if " " in text[:limit] else ""
            text = text.upper() if capitals else text
            if len(text) >= MIN_CHARS and set(text) <= charset:
                return text


@dataclass(frozen=True)
class RenderedLine:
    image: Image.Image  # RGB
    text: str
    font: str


class LineRenderer:
    """Text -> an RGB line image with random size, slant, rotation, blur, noise, ink and paper, and aspect ratio."""

    def __init__(self, fonts: list[Path], seed: int, font_sizes: tuple[int, int]):
        self.fonts = fonts
        self.font_sizes = font_sizes
        self.random = random.Random(seed)
        self.numpy = np.random.default_rng(seed)
        self.text = TextSource(seed)

    def sample(self) -> RenderedLine:
        font = self.random.choice(self.fonts)
        text = self.text.line(font_charset(font), font.stem in CAPITALS_FONTS)
        return RenderedLine(self.render(text, font), text, font.stem)

    def render(self, text: str, font_path: Path) -> Image.Image:
        rng = self.random
        size = rng.randint(*self.font_sizes)
        font = ImageFont.truetype(str(font_path), size)
        left, top, right, bottom = font.getbbox(text)
        pad_x, pad_y = rng.randint(2, size // 2), rng.randint(2, size // 4)
        ink = rng.randint(0, 60)
        canvas = Image.new("L", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), 0)
        ImageDraw.Draw(canvas).text((pad_x - left, pad_y - top), text, font=font, fill=255)
        # Slant (shear) and rotation, on the mask so the paper stays uniform.
        shear = rng.uniform(-0.35, 0.35)
        width, height = canvas.size
        extra = int(abs(shear) * height)
        canvas = canvas.transform(
            (width + extra, height),
            Image.Transform.AFFINE,
            (1, shear, -extra if shear > 0 else 0, 0, 1, 0),
            resample=Image.Resampling.BILINEAR,
        )
        canvas = canvas.rotate(rng.uniform(-3, 3), resample=Image.Resampling.BILINEAR, expand=True)
        if rng.random() < 0.15:  # thicker strokes
            canvas = canvas.filter(ImageFilter.MaxFilter(3))
        mask = np.asarray(canvas, dtype=np.float32) / 255
        paper = self._paper(mask.shape)
        ink_rgb = np.array([ink + rng.randint(0, 30) for _ in range(3)], dtype=np.float32)
        pixels = paper * (1 - mask[..., None]) + ink_rgb * mask[..., None]
        pixels += self.numpy.normal(0, rng.uniform(0, 8), pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        if rng.random() < 0.35:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.9)))
        if rng.random() < 0.2:  # lower resolution, scaled back up
            factor = rng.uniform(0.5, 0.9)
            small = image.resize((max(1, int(image.width * factor)), max(1, int(image.height * factor))))
            image = small.resize(image.size, Image.Resampling.BILINEAR)
        if rng.random() < 0.3:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=rng.randint(30, 90))
            image = Image.open(buffer).convert("RGB")
        return image

    def _paper(self, shape: tuple[int, int]) -> np.ndarray:
        rng = self.random
        base = np.array([rng.randint(200, 255) for _ in range(3)], dtype=np.float32)
        base = np.maximum(base, base.max() - 25)  # near gray or tinted, never saturated
        height, width = shape
        gradient = np.linspace(0, rng.uniform(-25, 10), width, dtype=np.float32)[None, :, None]
        return np.broadcast_to(base, (height, width, 3)) + gradient
