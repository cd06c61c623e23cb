"""`trocr-bench`: the backend through Triton side by side with in-process baselines, in one run.

In one run on this machine, with the same images and the same fixed output length (end-of-sequence
ignored, so random weights compare fairly): Hugging Face `transformers` `generate()`, a plain in-process
ONNX Runtime greedy loop on the project's graphs, the encoder alone, the in-process ceiling (encoder at
batch 1 plus batched decoder steps), and this backend through Triton over gRPC at several concurrencies.
In-process baselines run before the server starts, so they do not compete with it for the CPU.
Speed is reported as ratios measured in this run: absolute figures drift between machines and runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from trocr_build.repository import ServingOptions, ensure_repository
from trocr_build.variants import PRECISIONS
from trocr_client import protocol
from trocr_client.logs import configure_logging
from trocr_loadtest import baselines
from trocr_loadtest.front_bench import measure_front, render_front
from trocr_loadtest.images import image_set
from trocr_loadtest.load import LoadSpec, run_load
from trocr_loadtest.report import RESULTS_DIR
from trocr_loadtest.server_metrics import ServerFigures, scrape
from trocr_loadtest.stats import summarize
from trocr_loadtest.variant_table import as_dicts, encoder_speeds, measure_variants, render_variants
from trocr_serving import paths
from trocr_serving.execution import DEVICES, Execution
from trocr_serving.launcher.server import TritonServer
from trocr_serving.pipeline_config import PipelineConfig

LOGGER = logging.getLogger(__name__)


@dataclass
class Row:
    system: str
    setting: str  # "batch 8" or "concurrency 16"
    images_per_s: float
    p50_s: float
    p95_s: float
    server: dict | None = None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trocr-bench", description=__doc__)
    p.add_argument("--model", default="random:small")
    p.add_argument("--repository", type=Path, default=paths.default_repository())
    p.add_argument("--tokens", type=int, default=16, help="generated tokens per image (fixed)")
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="cuda: the repository built for CUDA, the in-process baselines on the GPU (default: %(default)s)",
    )
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help="of the served graphs")
    p.add_argument(
        "--concurrency",
        default=None,
        help="comma-separated client concurrencies (default: 1,4,16,32; cuda: 1,16,64,256)",
    )
    p.add_argument(
        "--max-active-sequences",
        type=int,
        default=None,
        help="decoder rows of the server (default: the build's, 64; cuda: 256)",
    )
    p.add_argument(
        "--trocr-instances", type=int, default=None, help="requests the server serves at once (default: 16; cuda: 256)"
    )
    p.add_argument("--duration-s", type=float, default=30.0, help="measured time per concurrency")
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--calls", type=int, default=16, help="timed calls per in-process baseline")
    p.add_argument("--hf-batches", default="1,8", help="batch sizes for transformers generate() ('' to skip)")
    p.add_argument(
        "--hf-dtypes", default=None, help="comma-separated fp32/fp16 for generate() (default: fp32; cuda: fp32,fp16)"
    )
    p.add_argument("--optimum-batches", default="1,8", help="batch sizes for optimum ('' to skip)")
    p.add_argument("--ceiling-batch", type=int, default=16)
    p.add_argument("--images", default="samples+generated", help="samples, generated, samples+generated or a folder")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "bench.json")
    p.add_argument(
        "--front",
        action="store_true",
        help="only the front's per-image cost (decode, resize) now and before, and the requests/s it sustains",
    )
    variants = p.add_argument_group(
        "variants (instead of the baselines): each precision built, served, loaded and read for its CER"
    )
    variants.add_argument("--variants", default=None, help="comma-separated precisions, e.g. fp32,int8")
    variants.add_argument(
        "--encoder-only",
        action="store_true",
        help="with --variants: only the encoder of --repository, converted to each precision, timed in-process",
    )
    variants.add_argument("--variant-concurrency", type=int, default=16)
    variants.add_argument("--rounds", type=int, default=2, help="times each variant is measured, alternating")
    variants.add_argument(
        "--workdir", type=Path, default=RESULTS_DIR / "variants", help="where the variants' repositories are built"
    )
    return p


def _row(result: baselines.BaselineResult) -> Row:
    return Row(result.system, f"batch {result.batch}", result.images_per_s, result.latency_p50_s, result.latency_p95_s)


def measure_in_process(args, info: dict, images: list[bytes]) -> tuple[list[Row], dict]:
    rows = []
    for dtype in args.hf_dtypes.split(","):
        for batch in [int(b) for b in args.hf_batches.split(",") if b]:
            LOGGER.info("transformers generate() at batch %d (%s, %s)", batch, args.device, dtype)
            calls = max(2, args.calls // batch)
            result = baselines.transformers_generate(
                info["source"], images, args.tokens, batch, calls, args.device, dtype
            )
            rows.append(_row(result))
    optimum_batches = [int(b) for b in args.optimum_batches.split(",") if b]
    if optimum_batches and importlib.util.find_spec("optimum") is None:
        LOGGER.warning(
            "optimum baseline skipped: optimum-onnx is not installed (it pins transformers < 4.58; the `optimum` "
            "extra installs it, in an environment without the `build` extra's transformers 5)"
        )
        optimum_batches = []
    for batch in optimum_batches:
        LOGGER.info("optimum ORTModelForVision2Seq at batch %d", batch)
        calls = max(2, args.calls // batch)
        result = baselines.optimum_generate(
            info["source"], paths.cache_dir(), images, args.tokens, batch, calls, args.device
        )
        rows.append(_row(result))
    graphs = baselines.RepositoryGraphs(args.repository, execution=Execution(args.device))
    LOGGER.info("in-process ONNX Runtime loop")
    rows.append(_row(baselines.onnxruntime_loop(graphs, images, args.tokens, args.calls)))
    rows.append(_row(baselines.encoder_only(graphs, images, args.calls)))
    rows.append(_row(baselines.torch_encoder_only(info["source"], images, args.calls, args.device)))
    LOGGER.info("in-process ceiling")
    ceiling_ips, per_image_s, encoder_s, step_s = baselines.in_process_ceiling(
        graphs, images, args.tokens, args.ceiling_batch
    )
    rows.append(
        Row(
            f"in-process ceiling: encoder b1 + decoder steps b{args.ceiling_batch}",
            "per image",
            ceiling_ips,
            per_image_s,
            per_image_s,
        )
    )
    detail = {"ceiling_encoder_s": encoder_s, "ceiling_decoder_step_s": step_s}
    return rows, detail


def measure_server(args, images: list[bytes]) -> list[Row]:
    rows = []
    with TritonServer(args.repository) as server:
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            spec = LoadSpec(
                concurrency=concurrency,
                duration_s=args.duration_s,
                warmup_s=args.warmup_s,
                max_new_tokens=args.tokens,
                ignore_eos=True,
            )
            LOGGER.info("Triton at concurrency %d for %.0f s", concurrency, args.duration_s)
            before = scrape(server.metrics_url)
            result = run_load(server.grpc_url, images, spec)
            figures = ServerFigures.between(before, scrape(server.metrics_url))
            summary = summarize(result.records, result.duration_s)
            if summary.errors:
                LOGGER.warning("errors at concurrency %d: %s", concurrency, summary.errors)
            rows.append(
                Row(
                    "trocr-triton (gRPC, continuous batching)",
                    f"concurrency {concurrency}",
                    summary.images_per_s,
                    summary.latency_s["p50"],
                    summary.latency_s["p95"],
                    asdict(figures),
                )
            )
    return rows


def gpu_name() -> str:
    """The GPU's name as the driver reports it (/proc, no NVIDIA tools needed)."""
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text().splitlines():
            if line.startswith("Model:"):
                return line.split(":", 1)[1].strip()
    return "unknown GPU"


def best_generate(rows: list[Row]) -> Row | None:
    """transformers generate() at its best batch of this run: the peer a user would pick."""
    return max((r for r in rows if r.system.startswith("transformers")), key=lambda r: r.images_per_s, default=None)


def render(rows: list[Row]) -> str:
    best = best_generate(rows)
    peer = f"vs generate() {best.setting}" if best else "vs generate()"
    lines = [
        f"| system | setting | images/s | p50 latency (s) | p95 latency (s) | {peer} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = f"{r.images_per_s / best.images_per_s:.2f}x" if best else "-"
        lines.append(f"| {r.system} | {r.setting} | {r.images_per_s:.2f} | {r.p50_s:.3f} | {r.p95_s:.3f} | {ratio} |")
    return "\n".join(lines)


def goals(rows: list[Row], ceiling_batch: int) -> list[str]:
    """The serving goals, each as measured, met or not. Printed, never asserted."""
    by = {(r.system.split(" ")[0], r.setting): r for r in rows}
    best = best_generate(rows)
    loop = next((r for r in rows if r.system.startswith("ONNX Runtime greedy loop")), None)
    ceiling = next((r for r in rows if r.system.startswith("in-process ceiling")), None)
    c16 = by.get(("trocr-triton", f"concurrency {ceiling_batch}"))
    c1 = by.get(("trocr-triton", "concurrency 1"))
    out = []

    def line(name, value, goal, met):
        out.append(f"- {name}: {value} (goal {goal}): {'met' if met else 'NOT met'}")

    if c16:
        batch = c16.server["decoder_mean_batch"]
        line(f"mean decoder batch at concurrency {ceiling_batch}", f"{batch:.1f}", ">= 8", batch >= 8)
        if best:
            ratio = c16.images_per_s / best.images_per_s
            name = f"throughput at concurrency {ceiling_batch} / generate() at its best batch ({best.setting})"
            line(name, f"{ratio:.2f}x", ">= 1.5x", ratio >= 1.5)
            if ceiling:  # what no scheduler can beat on this machine: the encoder's kernels bound it
                bound = ceiling.images_per_s / best.images_per_s
                out.append(f"  (in-process ceiling / generate() {best.setting}: {bound:.2f}x)")
        if ceiling:
            share = c16.images_per_s / ceiling.images_per_s
            line("throughput / in-process ceiling", f"{share:.0%}", ">= 95%", share >= 0.95)
    if c1 and loop:
        overhead = c1.p50_s / loop.p50_s - 1
        line("median latency at concurrency 1 vs in-process loop", f"{overhead:+.0%}", "<= +15%", overhead <= 0.15)
    return out


# What a GPU run needs that the CPU defaults do not give: many requests and rows in flight at once.
GPU_DEFAULTS = {
    "concurrency": "1,16,64,256",
    "max_active_sequences": 256,
    "trocr_instances": 256,
    "hf_dtypes": "fp32,fp16",
}
CPU_DEFAULTS = {
    "concurrency": "1,4,16,32",
    "max_active_sequences": ServingOptions.max_active_sequences,
    "trocr_instances": ServingOptions.trocr_instances,
    "hf_dtypes": "fp32",
}


def serving_options(args) -> ServingOptions:
    """The repository's options for this run (the device's defaults where the command line says nothing)."""
    defaults = GPU_DEFAULTS if args.device == "cuda" else CPU_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return ServingOptions(
        device=args.device,
        precision=args.precision,
        max_active_sequences=args.max_active_sequences,
        trocr_instances=args.trocr_instances,
    )


def compare_variants(args) -> int:
    precisions = args.variants.split(",")
    if args.encoder_only:
        print("\n".join(encoder_speeds(args.repository, precisions, [1, 8])))
        return 0
    rows = measure_variants(
        args.model, precisions, args.workdir, args.variant_concurrency, args.duration_s, args.warmup_s, args.rounds
    )
    machine = machine_description()
    print(f"\n{args.model}: variants through Triton, held-out synthetic set; {machine}\n")
    print(render_variants(rows, args.variant_concurrency))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"model": args.model, "machine": machine, "variants": as_dicts(rows)}, indent=2))
    print(f"\nwritten to {args.output}")
    return 0


def machine_description() -> str:
    """The CPU's model name (figures move with it: compare only within one run), cores, system."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores, {platform.platform()}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    if args.variants:
        return compare_variants(args)
    info = ensure_repository(args.model, args.repository, options=serving_options(args))
    images = image_set(args.images)
    if args.front:
        config = PipelineConfig.load(args.repository / protocol.MODEL_NAME / "1")
        print(f"\n{args.model}, {len(images)} images; {machine_description()}\n")
        print(render_front(measure_front(images, config), config.image))
        return 0
    started = time.monotonic()
    rows, detail = measure_in_process(args, info, images)
    rows += measure_server(args, images)
    table = render(rows)
    machine = machine_description()
    device = f"{args.device} {args.precision}" + (f" ({gpu_name()})" if args.device == "cuda" else "")
    print(f"\n{args.model}, {args.tokens} tokens per image (fixed), {len(images)} images; {device}; {machine}\n")
    print(table)
    for r in rows:
        if r.server:
            s = r.server
            print(
                f"- {r.setting}: decoder mean batch {s['decoder_mean_batch']:.1f} over {s['decoder_steps']:.0f} steps, "
                f"encoder mean batch {s['encoder_mean_batch']:.1f}, queue wait {s['queue_wait_mean_s'] * 1e3:.0f} ms, "
                f"rejected {s['rejected']:.0f}"
            )
    print(
        f"- ceiling parts: encoder b1 {detail['ceiling_encoder_s'] * 1e3:.0f} ms/image, decoder step "
        f"b{args.ceiling_batch} {detail['ceiling_decoder_step_s'] * 1e3:.1f} ms"
    )
    print("\nGoals:")
    print("\n".join(goals(rows, args.ceiling_batch)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "model": args.model,
                "device": args.device,
                "precision": args.precision,
                "tokens": args.tokens,
                "machine": machine,
                "rows": [asdict(r) for r in rows],
                "detail": detail,
                "elapsed_s": time.monotonic() - started,
            },
            indent=2,
        )
    )
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
