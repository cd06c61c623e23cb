"""`trocr-transcribe`: transcribe image files, folders or a manifest with a running trocr-triton server.

Exit codes: 0 every image transcribed; 1 some images failed (each listed, with its error); 2 usage error (bad
arguments, no images found); 3 the server could not be reached or the call failed as a whole.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from trocr_client.aio import DEFAULT_URL
from trocr_client.client import TrOCRClient
from trocr_client.errors import TrOCRError
from trocr_client.logs import configure_logging
from trocr_client.retry import RetryPolicy
from trocr_client.wire import Result

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
PROGRESS_AFTER = 8  # images: a progress bar on stderr from this many on
FORMATS = ("text", "jsonl", "csv")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trocr-transcribe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("paths", nargs="*", type=Path, help="image files, or folders (searched recursively)")
    p.add_argument("--manifest", type=Path, help="a file listing image paths, one per line (relative to it)")
    p.add_argument("--url", action="append", help=f"gRPC address of a server; repeat for several ({DEFAULT_URL})")
    p.add_argument("--format", choices=FORMATS, default="text", help="text (tab-separated), jsonl or csv")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--timeout-s", type=float, default=600.0, help="for the whole run, retries included")
    p.add_argument("--images-per-request", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--retries", type=int, default=3, help="tries after the first, for retryable errors")
    p.add_argument("--no-progress", action="store_true")
    return p


def find_images(paths: list[Path], manifest: Path | None) -> list[Path]:
    """Files as given (whatever their suffix: the server says if one is not an image), folders searched for
    image suffixes, manifest lines; in that order, each path once."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)
    if manifest is not None:
        lines = manifest.read_text().splitlines()
        found += [manifest.parent / line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return list(dict.fromkeys(found))


def printable(text: str) -> str:
    """No raw control characters in an output line: escaped as \\n, \\t, \\x1b..."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


class Writer:
    def __init__(self, form: str, out):
        self.form, self.out = form, out
        self.csv = csv.writer(out) if form == "csv" else None
        if self.csv is not None:
            self.csv.writerow(["image", "ok", "score", "text", "error"])

    def write(self, path: Path, result: Result) -> None:
        if self.form == "jsonl":
            row = {"image": str(path), "ok": result.ok, "score": round(result.score, 4), "text": result.text}
            if not result.ok:
                row["error"] = result.error
            print(json.dumps(row, ensure_ascii=False), file=self.out)
        elif self.csv is not None:
            self.csv.writerow([path, result.ok, f"{result.score:.4f}", printable(result.text), printable(result.error)])
        elif result.ok:
            print(f"{printable(str(path))}\t{result.score:.3f}\t{printable(result.text)}", file=self.out)
        else:
            print(f"{printable(str(path))}\terror\t{printable(result.error)}", file=self.out)


def progress(results: Iterator[Result], total: int, enabled: bool) -> Iterator[Result]:
    if not enabled or total < PROGRESS_AFTER:
        return results
    from tqdm import tqdm

    return tqdm(results, total=total, unit="image", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    images = find_images(args.paths, args.manifest)
    if not images:
        print("trocr-transcribe: no images: give files, folders or --manifest", file=sys.stderr)
        return EXIT_USAGE
    writer = Writer(args.format, sys.stdout)
    failed = 0
    options = {
        "timeout_s": args.timeout_s,
        "images_per_request": args.images_per_request,
        "max_concurrency": args.concurrency,
        "retry": RetryPolicy(max_attempts=args.retries + 1),
    }
    try:
        with TrOCRClient(args.url or [DEFAULT_URL], **options) as client:
            stream = client.transcribe_stream(images, args.max_new_tokens, args.num_beams)
            for result in progress(stream, len(images), not args.no_progress):
                writer.write(images[result.index], result)
                failed += not result.ok
    except TrOCRError as exc:
        print(f"trocr-transcribe: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if failed:
        print(f"trocr-transcribe: {failed} of {len(images)} images failed (listed above)", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
