"""`trocr-eval`: character and word error rates of a served model over a labelled set, sent through the real
server with the project's client, with the throughput of the run; or two runs' JSON side by side (`--compare`).

The set: `--manifest` (CSV `path,text` or JSON lines), `--iam` (IAM's lines.txt and its image tree), or one of the
held-out sets shipped with the project (`--set fonts`, the default: lines in handwriting fonts no training line
uses; `--set digits`: lines of real MNIST digits no training line uses). `--peer rapidocr` also reads the set with
an offline OCR peer and prints both side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tritonclient.utils import InferenceServerException

from trocr_build.accuracy import LineScore, Normalisation, error_rates, score_line
from trocr_build.eval_sets import MANIFEST_FILE, EvalSetError, LabelledLine, load_iam, load_manifest
from trocr_build.training import HELDOUT_DIGITS_DIR, HELDOUT_SET_DIR
from trocr_client.aio import DEFAULT_URL
from trocr_client.client import TrOCRClient
from trocr_client.errors import TrOCRError
from trocr_client.logs import configure_logging
from trocr_loadtest.metadata import code_revision, server
from trocr_loadtest.peer import PEERS, PeerUnavailableError, peer

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE = 0, 2, 3
SHIPPED_SETS = {"fonts": HELDOUT_SET_DIR, "digits": HELDOUT_DIGITS_DIR}
DEFAULT_CONCURRENCY = 16


@dataclass(frozen=True)
class EvalOptions:
    normalisation: Normalisation = Normalisation()
    concurrency: int = DEFAULT_CONCURRENCY  # requests in flight
    images_per_request: int = 1
    num_beams: int | None = None
    max_new_tokens: int | None = None
    timeout_s: float = 900.0


def evaluate(url: str, lines: list[LabelledLine], options: EvalOptions) -> dict:
    """Transcribe every line through the server at `url`; the error rates, the throughput and every line."""
    hypotheses: list[str] = [""] * len(lines)
    errors: list[str] = [""] * len(lines)
    client_options = {
        "timeout_s": options.timeout_s,
        "images_per_request": options.images_per_request,
        "max_concurrency": options.concurrency,
    }
    with TrOCRClient(url, **client_options) as client:
        client.connect()
        started = time.perf_counter()
        stream = client.transcribe_stream([line.path for line in lines], options.max_new_tokens, options.num_beams)
        for result in stream:
            hypotheses[result.index], errors[result.index] = result.text, result.error
        seconds = time.perf_counter() - started
    run = {"concurrency": options.concurrency, "images_per_request": options.images_per_request}
    return {**scored(lines, hypotheses, errors, seconds, options.normalisation), **run, "num_beams": options.num_beams}


def scored(
    lines: list[LabelledLine], hypotheses: list[str], errors: list[str], seconds: float, normalisation: Normalisation
) -> dict:
    """A run's error rates, failures, throughput and every line: the served model's, or a peer's."""
    scores = [score_line(line.text, hyp, normalisation) for line, hyp in zip(lines, hypotheses)]
    return {
        "normalisation": {**normalisation.__dict__, "described": normalisation.describe()},
        **error_rates(scores).as_dict(),
        "failed": sum(bool(error) for error in errors),
        "seconds": round(seconds, 3),
        "lines_per_s": round(len(lines) / seconds, 3),
        "per_line": [_line_entry(line, score, error) for line, score, error in zip(lines, scores, errors)],
    }


def _line_entry(line: LabelledLine, score: LineScore, error: str) -> dict:
    entry = {"path": str(line.path), "reference": score.reference, "hypothesis": score.hypothesis}
    entry.update(cer=round(score.cer, 4), char_edits=score.char_edits, chars=score.chars)
    return {**entry, "error": error} if error else entry


def worst_lines(report: dict, count: int) -> list[dict]:
    ranked = sorted(report["per_line"], key=lambda line: (line["cer"], line["char_edits"]), reverse=True)
    return [line for line in ranked[:count] if line["char_edits"] or line.get("error")]


def render(report: dict, worst: int) -> str:
    out = [
        f"{report['label']}: {report['lines']} lines of {report['set']} through {report['url']}",
        f"normalisation: {report['normalisation']['described']}",
        f"CER {100 * report['cer']:.2f}% ({report['char_edits']} edits / {report['chars']} characters)   "
        f"WER {100 * report['wer']:.2f}% ({report['word_edits']} / {report['words']} words)   "
        f"failed images {report['failed']}",
        f"throughput {report['lines_per_s']:.2f} lines/s ({report['seconds']:.1f} s"
        + (
            f", concurrency {report['concurrency']}, {report['images_per_request']} image(s) per request)"
            if "concurrency" in report
            else ")"
        ),
    ]
    lines = worst_lines(report, worst)
    if lines:
        out.append(f"worst {len(lines)} lines (CER, image, reference | hypothesis):")
        for line in lines:
            hypothesis = f"<error: {line['error']}>" if line.get("error") else line["hypothesis"]
            out.append(f"  {100 * line['cer']:6.1f}%  {line['path']}\n          {line['reference']!r} | {hypothesis!r}")
    return "\n".join(out)


def render_comparison(first: dict, second: dict) -> str:
    """Two runs side by side; refuses runs over different sets or normalisations (their rates do not compare)."""
    for key in ("set", "lines", "normalisation"):
        if first.get(key) != second.get(key):
            raise ValueError(f"the runs differ in {key} ({first.get(key)!r} vs {second.get(key)!r}): not comparable")
    rows = [
        ("", first["label"], second["label"], "second / first"),
        ("CER", f"{100 * first['cer']:.2f}%", f"{100 * second['cer']:.2f}%", _delta(first["cer"], second["cer"])),
        ("WER", f"{100 * first['wer']:.2f}%", f"{100 * second['wer']:.2f}%", _delta(first["wer"], second["wer"])),
        ("failed images", str(first["failed"]), str(second["failed"]), ""),
        (
            "lines/s",
            f"{first['lines_per_s']:.2f}",
            f"{second['lines_per_s']:.2f}",
            f"{second['lines_per_s'] / first['lines_per_s']:.2f}x",
        ),
    ]
    differing = sum(a["hypothesis"] != b["hypothesis"] for a, b in zip(first["per_line"], second["per_line"]))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([*table, f"lines transcribed differently: {differing} of {first['lines']}"])


def _delta(first: float, second: float) -> str:
    return f"{100 * (second - first):+.2f} points"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trocr-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", default=DEFAULT_URL, help="gRPC address of the server (default: %(default)s)")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--set",
        choices=list(SHIPPED_SETS),
        default="fonts",
        help="a shipped held-out set: lines in handwriting fonts no training line uses (the default), or lines of "
        "real MNIST digits no training line uses",
    )
    source.add_argument("--manifest", type=Path, help="CSV with header path,text, or JSON lines {path, text}")
    source.add_argument("--iam", type=Path, help="IAM lines.txt (images under its folder's lines/, or --iam-images)")
    source.add_argument("--compare", nargs=2, type=Path, metavar=("FIRST.json", "SECOND.json"))
    p.add_argument("--iam-images", type=Path, default=None, help="IAM's lines/ folder")
    p.add_argument("--lowercase", action="store_true", help="compare without case")
    p.add_argument("--strip-punctuation", action="store_true", help="compare without punctuation")
    p.add_argument("--keep-whitespace", action="store_true", help="compare whitespace as is (default: collapsed)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight")
    p.add_argument("--images-per-request", type=int, default=1)
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--worst", type=int, default=10, help="worst lines listed")
    p.add_argument("--label", default=None, help="name of this run in comparisons (default: the served model)")
    p.add_argument("--json", type=Path, default=None, help="write the report, every line included, here")
    p.add_argument(
        "--peer",
        choices=PEERS,
        default=None,
        help="also read the set with an offline OCR peer, in-process, and print both side by side ('peer' extra)",
    )
    return p


def load_set(args: argparse.Namespace) -> tuple[str, list[LabelledLine]]:
    if args.iam:
        return str(args.iam), load_iam(args.iam, args.iam_images)
    manifest = args.manifest or SHIPPED_SETS[args.set] / MANIFEST_FILE
    return str(manifest), load_manifest(manifest)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    if args.compare:
        first, second = (json.loads(path.read_text()) for path in args.compare)
        try:
            print(render_comparison(first, second))
        except ValueError as exc:
            print(f"trocr-eval: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    try:
        set_name, lines = load_set(args)
    except (OSError, EvalSetError) as exc:
        print(f"trocr-eval: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not lines:
        print(f"trocr-eval: {set_name} holds no lines", file=sys.stderr)
        return EXIT_USAGE
    try:  # before the served run: a missing peer is a usage error, found at once
        reader = peer(args.peer) if args.peer else None
    except PeerUnavailableError as exc:
        print(f"trocr-eval: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = EvalOptions(
        normalisation=Normalisation(args.lowercase, args.strip_punctuation, not args.keep_whitespace),
        concurrency=args.concurrency,
        images_per_request=args.images_per_request,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
    )
    try:
        served = server(args.url)
        report = evaluate(args.url, lines, options)
    except (TrOCRError, InferenceServerException) as exc:
        print(f"trocr-eval: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    label = args.label or f"{served['model']} {served['precision'] or ''}".strip()
    report = {"label": label, "set": set_name, "url": args.url, "code": code_revision(), **report}
    print(render(report, args.worst))
    if reader is not None:
        texts, errors, seconds = reader.read([line.path for line in lines])
        peer_report = {"label": reader.label, "set": set_name}
        report["peer"] = {**peer_report, **scored(lines, texts, errors, seconds, options.normalisation)}
        print(f"\n{render_comparison(report, report['peer'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
