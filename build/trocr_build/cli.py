"""`trocr-build`: export a TrOCR model into a servable Triton model repository."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trocr_build.repository import ServingOptions, build_repository
from trocr_build.variants import PRECISIONS
from trocr_client.logs import configure_logging
from trocr_serving import paths
from trocr_serving.execution import DEVICES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trocr-build", description=__doc__)
    p.add_argument(
        "--model",
        default="random:small",
        help="Hugging Face id (microsoft/trocr-small-handwritten), local directory, synthetic:<name> (made by "
        "trocr-train), or random:small / random:tiny (seeded random weights, offline, "
        "meaningless text). Default: %(default)s",
    )
    p.add_argument(
        "--output", type=Path, default=paths.default_repository(), help="repository folder (default: %(default)s)"
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="where random models are created")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs diff allowed against PyTorch")
    p.add_argument("--intra-op-threads", type=int, default=0, help="ONNX Runtime threads per model (0: per core)")
    p.add_argument(
        "--trocr-instances",
        type=int,
        default=ServingOptions.trocr_instances,
        help="instances of the public model (one stub process each; default: %(default)s)",
    )
    p.add_argument(
        "--trocr-requests-per-instance",
        type=int,
        default=ServingOptions.trocr_requests_per_instance,
        help="requests each instance holds at once on Triton 2.71 or later (1 on older servers, such as the pip "
        "server; default: %(default)s)",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="where the encoder and the decoder run: cpu, or cuda (KIND_GPU instances, CUDA execution provider; "
        "serve with '.[serve-gpu]')",
    )
    p.add_argument("--gpus", default="0", help="for --device cuda: comma-separated GPU ids, one instance each")
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help="what the graphs compute in: fp32, int8 (--device cpu: dynamic quantization after ONNX Runtime's "
        "transformer fusions) or fp16 (--device cuda); each variant is checked against fp32 on the sample images "
        "at build time (on the GPU when there is one, else on the CPU)",
    )
    p.add_argument(
        "--tensorrt",
        action="store_true",
        help="with --device cuda: the engine's encoder session under ONNX Runtime's TensorRT provider (needs "
        "TensorRT's libraries where it is served, as in NVIDIA's containers)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    configure_logging(args.verbose)
    options = ServingOptions(
        intra_op_threads=args.intra_op_threads,
        trocr_instances=args.trocr_instances,
        trocr_requests_per_instance=args.trocr_requests_per_instance,
        device=args.device,
        gpu_ids=tuple(int(gpu) for gpu in args.gpus.split(",")),
        precision=args.precision,
        tensorrt=args.tensorrt,
    )
    info = build_repository(args.model, args.output, args.cache_dir, options, args.tolerance)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
