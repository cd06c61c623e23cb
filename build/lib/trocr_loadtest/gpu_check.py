"""`trocr-gpu-check`: the GPU checks of the CUDA path, in one command, on a machine with an NVIDIA GPU.

1. parity on the GPU, fp32: the sample images through the real server built with `--device cuda` (greedy and
   beam search, 3 beams), token for token against Hugging Face `generate()` on the same weights (PyTorch, CPU);
2. fp16: the build's own check against fp32 (run on the GPU), then the fp16 server's tokens against fp32's;
3. the GPU benchmark (`trocr-bench --device cuda`), its table kept.

Each part is recorded even when another fails (a server that cannot start on that machine must not hide the
build's figures): `results.json` and `results.md` in `--output`. Setting the machine up (onnxruntime-gpu,
nvidia-pytriton) is `loadtest/gpu/run.sh`'s job; see the README's GPU section.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from trocr_build.repository import ServingOptions, build_repository
from trocr_client.client import TrOCRClient
from trocr_client.images import sample_paths
from trocr_client.logs import configure_logging
from trocr_loadtest import bench
from trocr_serving.execution import visible_gpus
from trocr_serving.launcher.server import TritonServer

LOGGER = logging.getLogger(__name__)
BEAMS = 3
MAX_NEW_TOKENS = 24


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trocr-gpu-check", description=__doc__)
    p.add_argument("--model", default="random:small", help="as for trocr-build (default: %(default)s)")
    p.add_argument("--output", type=Path, required=True, help="folder for the results and the repositories")
    p.add_argument("--bench-duration-s", type=float, default=20.0, help="measured time per concurrency")
    p.add_argument("--skip-bench", action="store_true")
    return p


def environment() -> dict:
    import onnxruntime as ort

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gpu": bench.gpu_name(),
        "gpus": visible_gpus(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "python": platform.python_version(),
    }


def reference_tokens(source: str, images: list[bytes], num_beams: int) -> list[list[int]]:
    """Hugging Face generate() on the CPU in float32: the reference every variant is held to."""
    import torch
    from PIL import Image
    from transformers import VisionEncoderDecoderModel

    from trocr_build.reference import reference_processor

    model = VisionEncoderDecoderModel.from_pretrained(source).eval()
    processor = reference_processor(source)
    pil = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
    with torch.inference_mode():
        out = model.generate(
            processor(images=pil, return_tensors="pt").pixel_values,
            max_new_tokens=MAX_NEW_TOKENS,
            num_beams=num_beams,
            do_sample=False,
        )
    eos = model.generation_config.eos_token_id
    # generate() starts with the decoder start token and pads rows after their end-of-sequence; the server
    # returns the generated tokens, end-of-sequence included
    return [row[1:][: row[1:].index(eos) + 1] if eos in row[1:] else row[1:] for row in out.tolist()]


def served_tokens(repository: Path, images: list[bytes], num_beams: int) -> list[list[int]]:
    with TritonServer(repository) as server, TrOCRClient(server.grpc_url) as client:
        results = client.transcribe(images, max_new_tokens=MAX_NEW_TOKENS, num_beams=num_beams)
    return [list(result.token_ids) for result in results]


def agreement(got: list[list[int]], want: list[list[int]]) -> dict:
    equal = sum(a == b for g, w in zip(got, want) for a, b in zip(g, w))
    total = sum(max(len(g), len(w)) for g, w in zip(got, want))
    return {
        "identical_images": sum(g == w for g, w in zip(got, want)),
        "images": len(want),
        "token_agreement": round(equal / max(total, 1), 4),
    }


def part(results: dict, name: str, run: Callable[[], dict]) -> None:
    """Run one check; record its figures, or its error, and go on."""
    LOGGER.info("GPU check: %s", name)
    started = time.monotonic()
    try:
        results[name] = {"ok": True, **run()}
    except Exception as exc:
        LOGGER.exception("%s failed", name)
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    results[name]["seconds"] = round(time.monotonic() - started, 1)


def markdown(results: dict) -> str:
    lines = [f"# GPU check, {results['environment']['date']}, {results['environment']['gpu']}", ""]
    for name, figures in results.items():
        shown = {key: value for key, value in figures.items() if key not in ("trace", "table")}
        lines.append(f"- **{name}**: `{json.dumps(shown)}`")
    if results.get("benchmark", {}).get("table"):
        lines += ["", results["benchmark"]["table"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    args.output.mkdir(parents=True, exist_ok=True)
    images = [path.read_bytes() for path in sample_paths()]
    results: dict = {"environment": environment()}
    repositories = {precision: args.output / f"repository-{precision}" for precision in ("fp32", "fp16")}
    built: dict = {}

    def build(precision: str) -> dict:
        options = ServingOptions(device="cuda", precision=precision)
        built[precision] = build_repository(args.model, repositories[precision], options=options)
        return {"variant": built[precision]["variant"], "build_seconds": built[precision]["build_seconds"]}

    part(results, "build fp32", lambda: build("fp32"))
    part(results, "build fp16 (its check against fp32)", lambda: build("fp16"))
    served: dict = {}
    for precision in ("fp32", "fp16"):
        for num_beams in (1, BEAMS):

            def parity(precision=precision, num_beams=num_beams) -> dict:
                got = served_tokens(repositories[precision], images, num_beams)
                served[precision, num_beams] = got
                want = reference_tokens(built["fp32"]["source"], images, num_beams)
                return {"vs generate() fp32 CPU": agreement(got, want)}

            part(results, f"server {precision}, num_beams {num_beams}", parity)
    for num_beams in (1, BEAMS):
        if ("fp16", num_beams) in served and ("fp32", num_beams) in served:
            results[f"fp16 vs fp32 server, num_beams {num_beams}"] = agreement(
                served["fp16", num_beams], served["fp32", num_beams]
            )
    if not args.skip_bench:

        def run_bench() -> dict:
            output = args.output / "bench.json"
            bench.main(
                [
                    f"--model={args.model}",
                    f"--repository={repositories['fp32']}",
                    "--device=cuda",
                    "--optimum-batches=",  # optimum is not among the wheels the GPU machine gets
                    f"--duration-s={args.bench_duration_s}",
                    f"--output={output}",
                ]
            )
            rows = [bench.Row(**row) for row in json.loads(output.read_text())["rows"]]
            return {"table": bench.render(rows)}

        part(results, "benchmark", run_bench)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if all(figures.get("ok", True) for figures in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
