"""The labelled-set loaders: IAM lines.txt, CSV and JSON-lines manifests, and their errors (file and line named)."""

from __future__ import annotations

import json

import pytest

from trocr_build.eval_sets import (
    HELDOUT_SET_DIR,
    MANIFEST_FILE,
    EvalSetError,
    LabelledLine,
    load_iam,
    load_manifest,
)
from trocr_build.training.synthetic_lines import HELD_OUT_FONTS
from trocr_build.training.train import main as train_main

IAM_LINES = """#--- lines.txt ---------------------------------------------------------------#
# format: a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from
#
a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from
a01-000u-01 err 156 19 395 932 1850 105 nominating|any|more|Labour|life|Peers
"""


def test_iam_lines_map_to_the_image_tree_with_bars_as_spaces(tmp_path):
    (tmp_path / "lines.txt").write_text(IAM_LINES)
    lines = load_iam(tmp_path / "lines.txt")
    assert lines == [
        LabelledLine(tmp_path / "lines/a01/a01-000u/a01-000u-00.png", "A MOVE to stop Mr. Gaitskell from"),
        LabelledLine(tmp_path / "lines/a01/a01-000u/a01-000u-01.png", "nominating any more Labour life Peers"),
    ]
    elsewhere = load_iam(tmp_path / "lines.txt", tmp_path / "images")
    assert elsewhere[0].path == tmp_path / "images/a01/a01-000u/a01-000u-00.png"


def test_a_malformed_iam_line_is_named(tmp_path):
    (tmp_path / "lines.txt").write_text("# header\na01-000u-00 ok 154 19\n")
    with pytest.raises(EvalSetError, match=r"lines.txt:2: expected 9 space-separated fields, got 4"):
        load_iam(tmp_path / "lines.txt")


def test_csv_manifest_paths_are_relative_to_it(tmp_path):
    (tmp_path / "set.csv").write_text('path,text\nimages/a.png,"Hello, world"\nb.jpg,two\n')
    assert load_manifest(tmp_path / "set.csv") == [
        LabelledLine(tmp_path / "images/a.png", "Hello, world"),
        LabelledLine(tmp_path / "b.jpg", "two"),
    ]


def test_csv_manifest_without_the_columns_is_refused(tmp_path):
    (tmp_path / "set.csv").write_text("file,label\na.png,x\n")
    with pytest.raises(EvalSetError, match="the header must name the columns path and text"):
        load_manifest(tmp_path / "set.csv")


def test_jsonl_manifest_and_its_errors(tmp_path):
    rows = [{"path": "a.png", "text": "one", "font": "x"}, {"path": "b.png", "text": ""}]
    (tmp_path / "set.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_manifest(tmp_path / "set.jsonl") == [
        LabelledLine(tmp_path / "a.png", "one"),
        LabelledLine(tmp_path / "b.png", ""),
    ]
    (tmp_path / "bad.jsonl").write_text('{"path": "a.png", "text": "one"}\n{"path": "b.png"}\n')
    with pytest.raises(EvalSetError, match=r"bad.jsonl:2: each entry needs a path and a text"):
        load_manifest(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(EvalSetError, match=r"broken.jsonl:1: not JSON"):
        load_manifest(tmp_path / "broken.jsonl")
    with pytest.raises(EvalSetError, match="a manifest is a .csv or a .jsonl file"):
        load_manifest(tmp_path / "set.txt")


def test_the_shipped_held_out_set_is_complete():
    lines = load_manifest(HELDOUT_SET_DIR / MANIFEST_FILE)
    assert len(lines) >= 200
    assert all(line.path.is_file() and line.text for line in lines)
    fonts = {json.loads(raw)["font"] for raw in (HELDOUT_SET_DIR / MANIFEST_FILE).read_text().splitlines()}
    assert fonts == set(HELD_OUT_FONTS)


def test_the_shipped_held_out_set_is_what_trocr_train_renders_on_any_day(tmp_path):
    """The set is rendered again from its seed (`trocr-train --heldout-only`): the same lines and fonts. (It
    once held dates from Faker's `date()`, which ends today: the set changed from day to day.)"""
    train_main(
        ["--heldout-only", "--heldout-output", str(tmp_path), "--heldout-lines", "200", "--heldout-digit-lines", "0"]
    )
    shipped = (HELDOUT_SET_DIR / MANIFEST_FILE).read_text().splitlines()
    assert (tmp_path / MANIFEST_FILE).read_text().splitlines() == shipped[:200]
