"""`trocr-bench --front`: what the `trocr` front costs per image on a CPU core, side by side in one run.

- decode: the encoded image to RGB (EXIF, bit depth, frames, limits), as the front does;
- + resize to uint8: what the front does since the encoder graph normalises (trocr_serving.front.preprocessing);
- + resize + normalise to float32: what it did before (the image processor's arithmetic on the CPU);
- parse_request: the front's whole work for a one-image request (checks, decode, resize) before its BLS call,
  so 1 / its time is the requests per second one front instance can sustain, before the scheduler and encoder.
Each is timed over the same images, alternating, and the median per image is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trocr_serving.front.preprocessing import decode_image, normalize, resize
from trocr_serving.front.requests import parse_request
from trocr_serving.pipeline_config import ImageConfig, PipelineConfig


@dataclass(frozen=True)
class FrontRow:
    step: str
    ms_per_image: float
    bytes_sent_per_image: int | None = None  # what crosses to the scheduler for this image


def _median_ms(work: Callable[[bytes], object], images: list[bytes]) -> float:
    samples = []
    for data in images:
        started = time.perf_counter()
        work(data)
        samples.append(time.perf_counter() - started)
    return 1e3 * statistics.median(samples)


def measure_front(images: list[bytes], config: PipelineConfig, rounds: int = 5) -> list[FrontRow]:
    image: ImageConfig = config.image
    steps: dict[str, Callable[[bytes], object]] = {
        "decode": decode_image,
        "decode + resize to uint8 (now)": lambda data: resize(decode_image(data), image),
        "decode + resize + normalise to float32 (before)": lambda data: normalize(
            resize(decode_image(data), image), image
        ),
        "parse_request, one image (now)": lambda data: parse_request(
            np.array([data], dtype=object), None, None, config
        ),
    }
    timings: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):  # alternating, so that drift on a shared machine hits every step alike
        for name, work in steps.items():
            timings[name].append(_median_ms(work, images))
    pixels = 3 * image.height * image.width
    sent = {
        "decode + resize to uint8 (now)": pixels,
        "decode + resize + normalise to float32 (before)": 4 * pixels,
    }
    return [FrontRow(name, statistics.median(values), sent.get(name)) for name, values in timings.items()]


def render_front(rows: list[FrontRow], image: ImageConfig) -> str:
    by_step = {row.step: row for row in rows}
    before = by_step["decode + resize + normalise to float32 (before)"].ms_per_image
    lines = [
        f"Front, per image at {image.width}x{image.height}, one core:",
        "| step | ms per image | vs before | bytes sent per image |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        sent = f"{row.bytes_sent_per_image:,}" if row.bytes_sent_per_image else "-"
        lines.append(f"| {row.step} | {row.ms_per_image:.2f} | {before / row.ms_per_image:.2f}x faster | {sent} |")
    parse = by_step["parse_request, one image (now)"].ms_per_image
    lines.append(f"- one front instance sustains about {1e3 / parse:.0f} one-image requests/s before its BLS call")
    return "\n".join(lines)
