"""The variants of one model side by side, in one run: each built (`trocr-build --precision`), served by its own
Triton server, loaded at a fixed concurrency with the held-out synthetic lines (natural lengths, end-of-sequence
honoured), then read through the server for its CER. Used by `trocr-bench --variants`."""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from trocr_build.eval_sets import HELDOUT_SET_DIR, MANIFEST_FILE, load_manifest
from trocr_build.greedy import graph_paths
from trocr_build.repository import ServingOptions, ensure_repository
from trocr_build.variants import PRECISIONS
from trocr_loadtest.evaluate import EvalOptions, evaluate
from trocr_loadtest.load import LoadSpec, run_load
from trocr_loadtest.stats import summarize
from trocr_serving import graph_names as names
from trocr_serving.launcher.server import TritonServer

LOGGER = logging.getLogger(__name__)


@dataclass
class VariantRow:
    precision: str
    round: int
    images_per_s: float  # closed loop at `concurrency`, one image per request
    p50_s: float
    cer: float  # held-out synthetic set, through the server
    wer: float
    failed: int
    validation: dict  # the build's check against fp32 (build_info.json)


def measure_variants(
    model: str,
    precisions: list[str],
    workdir: Path,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    rounds: int,
) -> list[VariantRow]:
    """Each variant in turn, `rounds` times over (alternating, so drift in the machine's speed hits all alike)."""
    lines = load_manifest(HELDOUT_SET_DIR / MANIFEST_FILE)
    images = [line.path.read_bytes() for line in lines]
    repositories = {}
    for precision in precisions:
        repository = workdir / f"{model.replace(':', '-').replace('/', '-')}-{precision}"
        info = ensure_repository(model, repository, options=ServingOptions(precision=precision))
        repositories[precision] = (repository, info["variant"])
    rows = []
    for round_ in range(1, rounds + 1):
        for precision, (repository, validation) in repositories.items():
            with TritonServer(repository) as server:
                LOGGER.info("%s %s: concurrency %d for %.0f s", model, precision, concurrency, duration_s)
                spec = LoadSpec(concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s)
                result = run_load(server.grpc_url, images, spec)
                summary = summarize(result.records, result.duration_s)
                report = evaluate(server.grpc_url, lines, EvalOptions(concurrency=concurrency))
            rows.append(
                VariantRow(
                    precision=precision,
                    round=round_,
                    images_per_s=summary.images_per_s,
                    p50_s=summary.latency_s.get("p50", float("nan")),
                    cer=report["cer"],
                    wer=report["wer"],
                    failed=report["failed"] + sum(summary.errors.values()),
                    validation=validation,
                )
            )
    return rows


def render_variants(rows: list[VariantRow], concurrency: int) -> str:
    first = rows[0]
    out = [
        f"| variant | round | images/s at concurrency {concurrency} | vs {first.precision} | p50 latency (s) "
        "| CER held-out | WER held-out | failed | build check vs fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    baseline = {row.round: row.images_per_s for row in rows if row.precision == first.precision}
    for row in rows:
        check = row.validation
        checked = (
            f"log-prob error {check['max_log_prob_error']:.3f}, tokens {100 * check['token_agreement']:.1f}%"
            if "token_agreement" in check
            else "(reference)"
        )
        out.append(
            f"| {row.precision} | {row.round} | {row.images_per_s:.2f} | {row.images_per_s / baseline[row.round]:.2f}x "
            f"| {row.p50_s:.3f} | {100 * row.cer:.2f}% | {100 * row.wer:.2f}% | {row.failed} | {checked} |"
        )
    return "\n".join(out)


def encoder_speeds(repository: Path, precisions: list[str], batches: list[int], repeats: int = 5) -> list[str]:
    """The repository's encoder converted to each precision (the build's own conversion, on a copy), timed
    in-process at each batch size, alternating between precisions; median per image. Any weights will do:
    speed does not depend on them (random weights fail int8's accuracy check, not its kernels)."""
    sessions = {}
    with tempfile.TemporaryDirectory(prefix="trocr-encoder-") as folder:
        for precision in precisions:
            encoder = Path(folder) / precision / names.ENCODER_ONNX
            decoder = encoder.with_name(names.DECODER_ONNX)
            encoder.parent.mkdir()
            for source, target in zip(graph_paths(repository), (encoder, decoder)):
                shutil.copyfile(source, target)
            if PRECISIONS[precision].convert is not None:
                PRECISIONS[precision].convert(encoder, decoder)
            sessions[precision] = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    _, _, height, width = sessions[precisions[0]].get_inputs()[0].shape
    lines = [
        f"| encoder | {' | '.join(precisions)} | {precisions[-1]} speed-up |",
        "| --- " * (len(precisions) + 2) + "|",
    ]
    for batch in batches:
        pixels = np.random.default_rng(0).integers(0, 256, (batch, 3, height, width), dtype=np.uint8)
        times: dict[str, list[float]] = {precision: [] for precision in precisions}
        for _ in range(repeats + 1):  # the first round warms up
            for precision, session in sessions.items():
                started = time.perf_counter()
                session.run(None, {names.PIXELS: pixels})
                times[precision].append(time.perf_counter() - started)
        per_image = {p: statistics.median(t[1:]) / batch for p, t in times.items()}
        cells = " | ".join(f"{1e3 * per_image[p]:.1f} ms/image" for p in precisions)
        lines.append(f"| batch {batch} | {cells} | {per_image[precisions[0]] / per_image[precisions[-1]]:.2f}x |")
    return lines


def as_dicts(rows: list[VariantRow]) -> list[dict]:
    return [asdict(row) for row in rows]
