"""`trocr-eval` against the real server: its CER over the held-out synthetic lines is the CER of `generate()`
in-process on the same images (random weights: the rate itself means nothing, the agreement does); the IAM and
manifest loaders end to end; a bad image counted, not fatal; two runs compared."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from tests.images import NOT_AN_IMAGE
from trocr_build.accuracy import character_error_rate
from trocr_build.eval_sets import HELDOUT_SET_DIR, MANIFEST_FILE, load_manifest
from trocr_build.training.train import transcribe
from trocr_loadtest import evaluate

pytestmark = pytest.mark.integration
LINES = 60  # of the held-out set: enough characters (about 1000) for a CER to 0.1 point


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """The first LINES lines of the shipped held-out set, as a manifest of their own."""
    folder = tmp_path_factory.mktemp("heldout")
    rows = (HELDOUT_SET_DIR / MANIFEST_FILE).read_text().splitlines()[:LINES]
    for row in rows:
        path = json.loads(row)["path"]
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HELDOUT_SET_DIR / path, folder / path)
    (folder / MANIFEST_FILE).write_text("\n".join(rows) + "\n")
    return folder / MANIFEST_FILE


def run(capsys, *argv) -> tuple[int, str, str]:
    code = evaluate.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cer_through_the_server_is_the_cer_of_generate_in_process(tiny, subset, tmp_path, capsys):
    code, out, _ = run(capsys, "--url", tiny.server.grpc_url, "--manifest", subset, "--json", tmp_path / "a.json")
    report = json.loads((tmp_path / "a.json").read_text())
    assert code == evaluate.EXIT_OK and report["lines"] == LINES and report["failed"] == 0
    assert report["label"] == "random:tiny fp32" and report["lines_per_s"] > 0 and report["chars"] > 500
    assert "normalisation: case-sensitive, punctuation kept, whitespace collapsed" in out and "CER " in out
    lines = load_manifest(subset)
    hypotheses = transcribe(tiny.model, tiny.processor, [Image.open(line.path).convert("RGB") for line in lines])
    assert [line["hypothesis"] for line in report["per_line"]] == [" ".join(h.split()) for h in hypotheses]
    assert report["cer"] == pytest.approx(character_error_rate([line.text for line in lines], hypotheses), abs=0.001)


def test_a_bad_image_is_counted_and_listed_and_its_neighbours_are_read(tiny, subset, tmp_path, capsys):
    lines = load_manifest(subset)[:5]
    (tmp_path / "broken.png").write_bytes(NOT_AN_IMAGE)
    manifest = tmp_path / "set.csv"
    rows = [f"{line.path},{line.text}" for line in lines] + ["broken.png,some text"]
    manifest.write_text("path,text\n" + "\n".join(rows) + "\n")
    code, out, _ = run(capsys, "--url", tiny.server.grpc_url, "--manifest", manifest, "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == evaluate.EXIT_OK and report["lines"] == 6 and report["failed"] == 1
    broken = report["per_line"][-1]
    assert "not a decodable image" in broken["error"] and broken["cer"] == 1.0
    assert not any(line.get("error") for line in report["per_line"][:5])
    assert "broken.png" in out and "<error: " in out


def test_iam_layout_and_a_comparison_of_two_runs(tiny, subset, tmp_path, capsys):
    lines = load_manifest(subset)[:8]
    iam_rows = []
    for index, line in enumerate(lines):
        line_id = f"a01-000u-{index:02d}"
        target = tmp_path / "lines" / "a01" / "a01-000u" / f"{line_id}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(line.path).save(target)
        iam_rows.append(f"{line_id} ok 154 19 408 746 1661 89 {line.text.replace(' ', '|')}")
    (tmp_path / "lines.txt").write_text("# IAM lines\n" + "\n".join(iam_rows) + "\n")
    url = tiny.server.grpc_url
    one, four = tmp_path / "one.json", tmp_path / "four.json"
    assert run(capsys, "--url", url, "--iam", tmp_path / "lines.txt", "--json", one, "--lowercase")[0] == 0
    argv = ("--url", url, "--iam", tmp_path / "lines.txt", "--json", four, "--lowercase", "--images-per-request", 4)
    assert run(capsys, *argv, "--label", "four per request")[0] == 0
    code, out, _ = run(capsys, "--compare", one, four)
    assert code == evaluate.EXIT_OK and "four per request" in out
    assert "lines transcribed differently: 0 of 8" in out  # batching changes nothing
    assert json.loads(one.read_text())["normalisation"]["lowercase"] is True
    strict = tmp_path / "strict.json"
    run(capsys, "--url", url, "--iam", tmp_path / "lines.txt", "--json", strict)
    code, _, err = run(capsys, "--compare", one, strict)
    assert code == evaluate.EXIT_USAGE and "differ in normalisation" in err


def test_an_unreachable_server_and_a_missing_set_exit_with_their_codes(capsys, tmp_path):
    assert (
        run(capsys, "--url", "127.0.0.1:1", "--manifest", HELDOUT_SET_DIR / MANIFEST_FILE)[0]
        == evaluate.EXIT_UNREACHABLE
    )
    code, _, err = run(capsys, "--manifest", tmp_path / "none.jsonl")
    assert code == evaluate.EXIT_USAGE and "none.jsonl" in err


def test_an_offline_peer_reads_the_same_lines_and_is_printed_beside_the_served_model(tiny, subset, tmp_path, capsys):
    """RapidOCR (the `peer` extra) on the same set: its own error rates and throughput, side by side."""
    code, out, _ = run(
        capsys, "--url", tiny.server.grpc_url, "--manifest", subset, "--peer", "rapidocr", "--json", tmp_path / "p.json"
    )
    report = json.loads((tmp_path / "p.json").read_text())
    peer = report["peer"]
    assert code == evaluate.EXIT_OK and peer["lines"] == report["lines"] == LINES and peer["failed"] == 0
    assert peer["label"].startswith("rapidocr 3.10.0") and peer["lines_per_s"] > 0
    assert [line["reference"] for line in peer["per_line"]] == [line["reference"] for line in report["per_line"]]
    # A real recognizer on lines in two handwriting fonts, against random weights (measured 2026-12-06 on the
    # whole set: 1.4%)
    assert peer["cer"] < 0.15 < report["cer"], (peer["cer"], report["cer"])
    assert "random:tiny fp32" in out and peer["label"] in out and "lines/s" in out
