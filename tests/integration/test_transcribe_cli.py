"""`trocr-transcribe` on a folder against the real server: every image answered (bad ones listed, never
dropped), text, JSON lines and CSV outputs, and exit codes that tell partial failure from an unreachable server
and from a usage error."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.images import NOT_AN_IMAGE, text_line
from trocr_client import cli

pytestmark = pytest.mark.integration


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "nested").mkdir()
    for i in range(9):
        (tmp_path / ("nested" if i % 2 else "") / f"line{i}.png").write_bytes(text_line(f"cli {i}"))
    (tmp_path / "broken.png").write_bytes(NOT_AN_IMAGE)
    (tmp_path / "notes.txt").write_text("not an image: not picked up from a folder")
    return tmp_path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_folder_in_json_lines_lists_every_image_and_exits_1_for_the_bad_one(tiny, folder, capsys):
    code, out, err = run(capsys, folder, "--url", tiny.server.grpc_url, "--format", "jsonl", "--max-new-tokens", 6)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == cli.EXIT_SOME_FAILED and len(rows) == 10  # 9 lines + broken.png; notes.txt is not an image
    broken = [row for row in rows if row["image"].endswith("broken.png")]
    assert broken[0]["ok"] is False and "not a decodable image" in broken[0]["error"]
    assert sum(row["ok"] for row in rows) == 9 and "1 of 10 images failed" in err
    assert "image/s" in err or "10/10" in err  # the progress bar, past a handful of images


def test_csv_is_quoted_and_text_has_no_control_characters(tiny, folder, capsys):
    manifest = folder / "manifest.txt"
    manifest.write_text("line0.png\nnested/line1.png\n")
    code, out, _ = run(capsys, "--manifest", manifest, "--url", tiny.server.grpc_url, "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert code == cli.EXIT_OK and rows[0] == ["image", "ok", "score", "text", "error"] and len(rows) == 3
    assert all(row[1] == "True" for row in rows[1:])
    assert cli.printable("a\tb\x1b[31m\n") == "a\\tb\\x1b[31m\\n"


def test_exit_codes_for_an_unreachable_server_a_missing_file_and_no_images(folder, capsys):
    code, _, err = run(capsys, folder / "line0.png", "--url", "127.0.0.1:1", "--retries", 0, "--timeout-s", 10)
    assert code == cli.EXIT_UNREACHABLE and "ServerUnavailableError" in err
    code, out, _ = run(capsys, folder / "missing.png", "--url", "127.0.0.1:1")  # never sent: its own error
    assert code == cli.EXIT_SOME_FAILED and "missing.png\terror\timage 0: " in out and "cannot read it" in out
    code, _, err = run(capsys, "--url", "127.0.0.1:1")
    assert code == cli.EXIT_USAGE and "no images" in err
