"""Labelled text lines for accuracy checks: IAM's `lines.txt` with its image tree, a CSV or JSON-lines manifest
of `path,text`, and the held-out synthetic set that ships with the project (trocr_build.training)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trocr_build.training import HELDOUT_SET_DIR  # noqa: F401 (the set's readers import it from here)

MANIFEST_FILE = "manifest.jsonl"


class EvalSetError(ValueError):
    """A labelled set that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class LabelledLine:
    path: Path
    text: str


def load_iam(lines_txt: Path, image_root: Path | None = None) -> list[LabelledLine]:
    """IAM `lines.txt`: `a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from` -> the image
    `<root>/a01/a01-000u/a01-000u-00.png`, text with `|` as the word separator. Comment lines start with `#`.
    Lines whose segmentation IAM marks `err` are kept (they are part of the official sets)."""
    root = image_root or lines_txt.parent / "lines"
    lines = []
    for number, raw in enumerate(lines_txt.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        fields = raw.split(" ", 8)
        if len(fields) != 9:
            raise EvalSetError(f"{lines_txt}:{number}: expected 9 space-separated fields, got {len(fields)}")
        line_id, text = fields[0], fields[8].replace("|", " ")
        parts = line_id.split("-")
        if len(parts) < 3:
            raise EvalSetError(f"{lines_txt}:{number}: line id {line_id!r} is not form-writer-line (a01-000u-00)")
        lines.append(LabelledLine(root / parts[0] / f"{parts[0]}-{parts[1]}" / f"{line_id}.png", text))
    return lines


def load_manifest(manifest: Path) -> list[LabelledLine]:
    """A `.csv` with a header `path,text`, or `.jsonl` of {"path": ..., "text": ...}; paths relative to the
    manifest's folder."""
    if manifest.suffix == ".csv":
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"path", "text"} <= set(reader.fieldnames):
                raise EvalSetError(f"{manifest}: the header must name the columns path and text")
            rows = [(number, row) for number, row in enumerate(reader, 2)]
    elif manifest.suffix == ".jsonl":
        rows = []
        for number, raw in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
            if raw.strip():
                try:
                    rows.append((number, json.loads(raw)))
                except json.JSONDecodeError as exc:
                    raise EvalSetError(f"{manifest}:{number}: not JSON ({exc.msg})") from None
    else:
        raise EvalSetError(f"{manifest}: a manifest is a .csv or a .jsonl file")
    lines = []
    for number, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not isinstance(row.get("text"), str):
            raise EvalSetError(f"{manifest}:{number}: each entry needs a path and a text")
        lines.append(LabelledLine(manifest.parent / row["path"], row["text"]))
    return lines


def write_manifest(directory: Path, rendered: Iterable) -> list[LabelledLine]:
    """Rendered lines (image, text, font) -> `images/NNNN.jpg` and `manifest.jsonl` (with the font) in `directory`."""
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines, entries = [], []
    for index, line in enumerate(rendered):
        relative = f"images/{index:04d}.jpg"
        line.image.save(directory / relative, quality=85)
        lines.append(LabelledLine(directory / relative, line.text))
        entries.append(json.dumps({"path": relative, "text": line.text, "font": line.font}))
    (directory / MANIFEST_FILE).write_text("\n".join(entries) + "\n", encoding="utf-8")
    return lines
