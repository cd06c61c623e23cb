"""`trocr-transcribe`: transcribe image files with a running trocr-triton server."""

from __future__ import annotations

import argparse
import json
import sys

from trocr_client.client import DEFAULT_URL, TrOCRClient
from trocr_client.errors import TrOCRError
from trocr_client.logs import configure_logging


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trocr-transcribe", description=__doc__)
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, TIFF, BMP, WebP)")
    p.add_argument("--url", default=DEFAULT_URL, help="gRPC address of the server (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    status = 0
    with TrOCRClient(args.url, timeout_s=args.timeout_s) as client:
        for path in args.images:  # one request per file, so one bad file does not hide the others
            try:
                (result,) = client.transcribe(path, args.max_new_tokens, args.num_beams)
            except (TrOCRError, OSError) as exc:
                print(f"{path}\terror\t{type(exc).__name__}: {exc}", file=sys.stderr)
                status = 1
                continue
            if not result.ok:
                print(f"{path}\terror\t{result.error}", file=sys.stderr)
                status = 1
                continue
            if args.json:
                print(json.dumps({"image": path, "text": result.text, "score": round(result.score, 4)}))
            else:
                print(f"{path}\t{result.score:.3f}\t{result.text}")
    return status


if __name__ == "__main__":
    sys.exit(main())
