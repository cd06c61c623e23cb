"""The shipped `synthetic:small` (trained by `trocr-train`) through the real server: it reads the sample images,
and its CER over the held-out synthetic set through the server is the CER of `generate()` in-process on the same
images (to 0.1 point)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from trocr_build import demo
from trocr_build.accuracy import character_error_rate
from trocr_build.eval_sets import HELDOUT_SET_DIR, MANIFEST_FILE, load_manifest
from trocr_build.training.train import transcribe
from trocr_client.images import sample_paths
from trocr_loadtest import evaluate

pytestmark = pytest.mark.integration
SAMPLE_TEXTS = {  # what the sample images show
    "line_gray.jpg": "jumps over the lazy dog",
    "line_gray.png": "Seeded random weights",
    "line_palette.bmp": "Triton serves TrOCR",
    "line_rgb.png": "The quick brown fox",
    "line_rgb.webp": "gRPC at high throughput",
    "line_rgba.tiff": "Handwriting 2026",
}
MAX_SAMPLE_CER = 0.12  # measured: 9.9% (6 lines, 121 characters)


def test_the_main_command_shows_the_text_of_the_samples(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TROCR_TRITON_CACHE", str(tmp_path / "cache"))  # no model of this machine's own training
    assert demo.main(["--repository", str(tmp_path / "repository")]) == 0  # the default model: synthetic:small
    out = capsys.readouterr().out
    assert "transcribed by synthetic:small through Triton" in out and "random weights" not in out
    texts = {line.split()[0]: line.split(maxsplit=3)[3] for line in out.splitlines() if line.startswith("line_")}
    assert sorted(texts) == sorted(path.name for path in sample_paths())
    names = sorted(texts)
    cer = character_error_rate([SAMPLE_TEXTS[n] for n in names], [texts[n] for n in names])
    assert cer <= MAX_SAMPLE_CER, texts


def test_held_out_cer_through_the_server_is_the_cer_of_generate(synthetic, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert evaluate.main(["--url", synthetic.server.grpc_url, "--json", str(report_path)]) == evaluate.EXIT_OK
    report = json.loads(report_path.read_text())
    lines = load_manifest(HELDOUT_SET_DIR / MANIFEST_FILE)
    assert report["lines"] == len(lines) == 200 and report["failed"] == 0
    hypotheses = transcribe(
        synthetic.model, synthetic.processor, [Image.open(line.path).convert("RGB") for line in lines]
    )
    in_process = character_error_rate([line.text for line in lines], hypotheses)
    assert report["cer"] == pytest.approx(in_process, abs=0.001)
    capsys.readouterr()
