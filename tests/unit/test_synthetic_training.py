"""The synthetic training lines (fonts, text, rendering) and `trocr-train` end to end on a few steps."""

from __future__ import annotations

import collections
import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import TrOCRProcessor, VisionEncoderDecoderModel

from trocr_build.eval_sets import MANIFEST_FILE, load_manifest
from trocr_build.greedy import graph_paths
from trocr_build.repository import ensure_repository
from trocr_build.trained_models import SHIPPED_MODELS_DIR, resolve_model, weights_digest
from trocr_build.training.synthetic_lines import (
    CHARSET,
    HELD_OUT_FONTS,
    MAX_CHARS,
    MIN_CHARS,
    FontsMissingError,
    LineRenderer,
    load_fonts,
    split_fonts,
)
from trocr_build.training.train import CHECKPOINT_FILE, CHUNK_LINES, RenderedLines, checkpoint_dir, server_image_config
from trocr_build.training.train import main as train_main


@pytest.fixture(scope="module")
def fonts():
    return load_fonts()


def test_the_held_out_fonts_are_never_training_fonts(fonts):
    training, heldout = fonts
    assert [path.stem for path in heldout] == list(HELD_OUT_FONTS)
    assert not {path.stem for path in training} & set(HELD_OUT_FONTS)
    assert len(training) >= 10


def test_missing_fonts_are_named_with_the_packages_to_install():
    with pytest.raises(
        FontsMissingError, match="fonts missing: dkg, .*Humor-Sans: install the Debian packages .*fonts-bwht"
    ):
        split_fonts({})


def test_rendered_lines_are_varied_and_their_text_is_drawable(fonts):
    training, _ = fonts
    renderer = LineRenderer(training, seed=5, font_sizes=(20, 44))
    lines = [renderer.sample() for _ in range(40)]
    assert all(MIN_CHARS <= len(line.text) <= MAX_CHARS and set(line.text) <= set(CHARSET) for line in lines)
    assert all(line.image.mode == "RGB" and line.image.width > line.image.height for line in lines)
    assert len({line.font for line in lines}) > 10 and len({line.image.height for line in lines}) > 5
    again = LineRenderer(training, seed=5, font_sizes=(20, 44)).sample()
    assert (again.text, again.font) == (lines[0].text, lines[0].font)  # seeded


def test_each_rendered_line_is_trained_on_twice_never_twice_in_one_round(fonts):
    processor = TrOCRProcessor.from_pretrained(SHIPPED_MODELS_DIR / "small")
    lines = RenderedLines(fonts[0], 4, server_image_config(processor), processor, curriculum_lines=0, line_uses=2)
    keys = [(pixels.tobytes(), tuple(labels)) for pixels, labels in itertools.islice(lines, 7 * CHUNK_LINES)]
    # rounds: chunk 1; chunks 1 and 2; chunks 2 and 3; chunks 3 and 4
    starts = (CHUNK_LINES, 3 * CHUNK_LINES, 5 * CHUNK_LINES)
    rounds = [keys[:CHUNK_LINES], *(keys[start : start + 2 * CHUNK_LINES] for start in starts)]
    assert all(len(set(round_)) == len(round_) for round_ in rounds)
    assert sorted(collections.Counter(keys).values()) == [1] * CHUNK_LINES + [2] * 3 * CHUNK_LINES
    assert set(rounds[0]) < set(rounds[1]) and rounds[1][:CHUNK_LINES] != rounds[0]  # shuffled together


def test_trocr_train_writes_a_loadable_model_its_figures_and_the_held_out_set(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TROCR_TRITON_CACHE", str(tmp_path / "cache"))
    assert resolve_model("synthetic:small") == str(SHIPPED_MODELS_DIR / "small")  # nothing trained yet: shipped
    with pytest.raises(ValueError, match=r"unknown model 'synthetic:large': shipped or made by .*: \['small'\]"):
        resolve_model("synthetic:large")
    heldout_dir = tmp_path / "heldout"
    argv = ["--heldout-output", str(heldout_dir), "--steps", "2", "--batch-size", "4", "--warmup-steps", "1"]
    train_main(
        [*argv, "--eval-every", "1", "--validation-lines", "4", "--heldout-lines", "6", "--heldout-digit-lines", "0"]
    )
    model_dir = Path(resolve_model("synthetic:small"))  # where trocr-train writes by default: a user's own wins
    assert model_dir == tmp_path / "cache" / "synthetic-models" / "small"
    figures = json.loads((model_dir / "training.json").read_text())
    assert figures["steps"] == 2 and [h["step"] for h in figures["history"]] == [1, 2]
    assert figures["heldout_fonts"] == sorted(HELD_OUT_FONTS) and figures["heldout_lines"] == 6
    assert figures["heldout_cer"] >= 0 and figures["command"].startswith("trocr-train --heldout-output")
    assert VisionEncoderDecoderModel.from_pretrained(model_dir).config.encoder.patch_size == [32, 4]
    lines = load_manifest(heldout_dir / MANIFEST_FILE)
    assert len(lines) == 6 and all(line.path.is_file() for line in lines)
    assert '"heldout_cer"' in capsys.readouterr().out
    assert resolve_model("microsoft/trocr-small-handwritten") == "microsoft/trocr-small-handwritten"


def test_a_model_trained_again_is_exported_again(tmp_path):
    """The repository records its weights' SHA-256: the same folder with new weights is not served stale."""
    mine = tmp_path / "mine"
    shutil.copytree(SHIPPED_MODELS_DIR / "small", mine)
    first = ensure_repository(str(mine), tmp_path / "repository")
    graph = graph_paths(tmp_path / "repository")[0]
    built_at = graph.stat().st_mtime_ns
    ensure_repository(str(mine), tmp_path / "repository")
    assert graph.stat().st_mtime_ns == built_at  # same weights: kept
    model = VisionEncoderDecoderModel.from_pretrained(mine)
    with torch.no_grad():
        model.decoder.output_projection.weight[0, 0] += 0.5
    model.save_pretrained(mine)  # "trained again"
    second = ensure_repository(str(mine), tmp_path / "repository")
    assert graph.stat().st_mtime_ns != built_at
    assert second["weights_sha256"] != first["weights_sha256"] == weights_digest(str(SHIPPED_MODELS_DIR / "small"))


def test_a_run_resumes_from_its_checkpoint_with_the_same_command(tmp_path):
    """The checkpoint saved at each check carries the model, the optimizer, the step, the history and the minutes:
    a run stopped after its first check (here: its checkpoint rolled back to it) ends as if it had not stopped."""
    output = tmp_path / "model"
    argv = ["--output", str(output), "--heldout-output", str(tmp_path / "heldout"), "--steps", "2", "--batch-size", "4"]
    argv += ["--warmup-steps", "1", "--eval-every", "1", "--validation-lines", "4", "--heldout-lines", "2"]
    argv += ["--heldout-digit-lines", "0", "--loader-workers", "0"]
    train_main(argv)
    checkpoint = checkpoint_dir(output) / CHECKPOINT_FILE
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 2 and [h["step"] for h in state["history"]] == [1, 2]
    state.update(step=1, history=state["history"][:1])  # as if stopped after step 1's check
    torch.save(state, checkpoint)
    train_main([*argv, "--resume"])
    figures = json.loads((output / "training.json").read_text())
    assert [h["step"] for h in figures["history"]] == [1, 2]  # step 1 from the checkpoint, step 2 trained again
    assert figures["training_minutes"] >= round(state["minutes"], 1)  # the minutes before the stop counted
    with pytest.raises(SystemExit, match="is of another command"):
        train_main([*argv[:-1], "1", "--resume"])  # other loader workers: not the run that left the checkpoint
