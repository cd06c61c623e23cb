"""`trocr-demo`: the main job end to end, offline.

Builds a model repository (default `synthetic:small`, the small model trained offline and shipped in the
package), starts Triton on free loopback ports, transcribes the handwritten sample images over gRPC, prints each
beside its true text with the character error rate (CER), and stops the server.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from trocr_build.accuracy import character_error_rate
from trocr_build.repository import ServingOptions, ensure_repository
from trocr_client.client import TrOCRClient
from trocr_client.images import SAMPLES_DIR, samples
from trocr_client.logs import configure_logging
from trocr_serving import paths
from trocr_serving.launcher.server import TritonServer

LOGGER = logging.getLogger(__name__)
# One client sends one request: two front instances serve it, and stopping unloads three instances, not 17
# (Triton's Python backend takes about a second to unload each: trocr_serving.launcher.server).
DEMO_OPTIONS = ServingOptions(trocr_instances=2, trocr_max_queue_size=2)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trocr-demo", description=__doc__)
    p.add_argument("--model", default="synthetic:small", help="as for trocr-build (default: %(default)s)")
    p.add_argument(
        "--repository", type=Path, default=paths.demo_repository(), help="where to build it (default: %(default)s)"
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the repository holds this model")
    p.add_argument(
        "images", nargs="*", type=Path, help=f"images to transcribe (default: the handwritten samples in {SAMPLES_DIR})"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    ensure_repository(args.model, args.repository, args.rebuild, DEMO_OPTIONS)
    references = {} if args.images else {sample.path: sample.text for sample in samples()}
    images = args.images or list(references)
    # Nothing is in flight when the demo stops: a short exit timeout.
    with TritonServer(args.repository, exit_timeout_s=5) as server, TrOCRClient(server.grpc_url) as client:
        started = time.perf_counter()
        results = client.transcribe(images)
        elapsed_s = time.perf_counter() - started
    print(f"\n{len(images)} images transcribed by {args.model} through Triton in {elapsed_s:.2f} s")
    if args.model.startswith("random:"):
        print("(random weights: the text is meaningless; use --model microsoft/trocr-small-handwritten for real text)")
    width = max(len(path.name) for path in images)
    for path, result in zip(images, results):
        if path in references:
            cer = character_error_rate([references[path]], [result.text])
            print(f"{path.name:{width}s}  CER {cer:6.1%}  true: {references[path]}")
            print(f"{'':{width}s}  {'':10s}  read: {result.text}")
        else:
            print(f"{path.name:{width}s}  score {result.score:7.3f}  {result.text}")
    if references:
        cer = character_error_rate(list(references.values()), [result.text for result in results])
        print(f"CER over the {len(images)} handwritten samples: {cer:.1%} (they are not in the model's training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
