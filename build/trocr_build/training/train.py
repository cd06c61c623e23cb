"""`trocr-train`: train `synthetic:small`, a small TrOCR (a DeiT encoder, or `--spec vit-dinov2`'s pretrained
ViT; a TrOCR decoder; a byte vocabulary) on synthetic text lines and real digits, on the CPU, and write it (into
the cache folder) with the held-out sets it is evaluated on.

Training lines are rendered on the fly by a data-loader process, each trained on `--line-uses` times; the fonts
of `synthetic_lines.HELD_OUT_FONTS` are used for the held-out set only. The figures (training time, CER on lines of
the training fonts and on the held-out fonts, by Hugging Face `generate()`) go to `training.json` beside the weights.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import logging
import math
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from transformers import TrOCRProcessor, VisionEncoderDecoderModel

from trocr_build.accuracy import character_error_rate
from trocr_build.eval_sets import write_manifest
from trocr_build.model_spec import EOS, PAD, ModelSpec, build_model
from trocr_build.repository import image_config
from trocr_build.trained_models import synthetic_models_dir
from trocr_build.training import HELDOUT_DIGITS_DIR, HELDOUT_SET_DIR, pretrained
from trocr_build.training.digits import Digits, compose_line, digit_text
from trocr_build.training.synthetic_lines import MAX_CHARS, LineRenderer, RenderedLine, load_fonts
from trocr_client.logs import configure_logging
from trocr_serving import paths
from trocr_serving.front.preprocessing import normalize, resize
from trocr_serving.pipeline_config import ImageConfig

LOGGER = logging.getLogger(__name__)

# Patches of the full line height and 4 pixels wide: each token is a slice of the line, 80 of them in reading
# order, so the training-only CTC loss on them has room for 26 characters with repeats (8x8 patches gave 32
# columns, and the encoder had not started to read after 27 minutes of training).
SYNTHETIC_SMALL = ModelSpec(
    image_height=32,
    image_width=320,
    patch_size=(32, 4),
    encoder_hidden_size=128,
    encoder_layers=4,
    encoder_heads=4,
    encoder_intermediate_size=512,
    vocab_size=260,  # the 4 special tokens and the 256 bytes: one token per character
    d_model=128,
    decoder_layers=3,
    decoder_heads=4,
    decoder_ffn_dim=512,
    max_position_embeddings=64,
    max_length=40,
)
# A ViT-S/14 encoder that starts from DINOv2's weights (training.pretrained; its first `encoder_layers` layers) on
# a line strip of 2 x 40 patches, ImageNet's normalisation (the weights were trained with it).
PRETRAINED_VIT = ModelSpec(
    image_height=28,
    image_width=560,
    patch_size=pretrained.PATCH,
    encoder_hidden_size=pretrained.WIDTH,
    encoder_layers=4,
    encoder_heads=pretrained.HEADS,
    encoder_intermediate_size=pretrained.MLP,
    vocab_size=260,
    d_model=256,
    decoder_layers=3,
    decoder_heads=8,
    decoder_ffn_dim=1024,
    max_position_embeddings=64,
    max_length=40,
    encoder_kind="vit",
    layer_norm_eps=pretrained.LAYER_NORM_EPS,
    image_mean=pretrained.IMAGENET_MEAN,
    image_std=pretrained.IMAGENET_STD,
)
SPECS = {"small": SYNTHETIC_SMALL, "vit-dinov2": PRETRAINED_VIT}
TRAINING_SEED = 1
VALIDATION_SEED = 2
HELDOUT_SEED = 3
# Training renders small (the model sees 32 pixels of height); the held-out set renders large, like a scan.
TRAINING_FONT_SIZES = (24, 48)
CURRICULUM_START_CHARS = 8
CHUNK_LINES = 256
HELDOUT_FONT_SIZES = (28, 64)
DIGIT_SCALES = (1.2, 2.6)  # MNIST's 28-pixel digits, scaled: lines 44 to 95 pixels high


def pixel_values(image: Image.Image, config: ImageConfig) -> np.ndarray:
    """One RGB image as the model sees it: resized as the server's front does, normalised as its encoder graph."""
    return normalize(resize(image, config), config)


def server_image_config(processor: TrOCRProcessor) -> ImageConfig:
    """The server's preprocessing settings for this processor: training feeds exactly what the server will."""
    size = processor.image_processor.size
    return image_config(processor.image_processor, size["height"], size["width"])


class RenderedLines(IterableDataset):
    """Lines rendered on the fly, each used `line_uses` times: lines are rendered in chunks of CHUNK_LINES, and
    each round yields the newest `line_uses` chunks shuffled together, so a line comes back once per round, never
    twice in a round (rendering a line costs about as much as training on 64 of them: reusing it lets the 2 cores
    train more). The longest line grows from CURRICULUM_START_CHARS to MAX_CHARS over the first
    `curriculum_lines` rendered lines (short lines first: a decoder finds where to look in a short line sooner).
    With `line_uses` 1 the lines come in the order rendered. A `digit_share` of the lines are fields of forms
    written with real MNIST digits (training.digits, the training split). `first_line` continues the curriculum
    of a run resumed from a checkpoint (its lines are new ones: the seed moves with it)."""

    def __init__(
        self,
        fonts: list[Path],
        seed: int,
        config: ImageConfig,
        processor,
        curriculum_lines: int,
        line_uses: int = 1,
        digits: Digits | None = None,
        digit_share: float = 0.0,
        first_line: int = 0,
    ):
        self.fonts, self.seed, self.config, self.processor = fonts, seed, config, processor
        self.curriculum_lines, self.line_uses = curriculum_lines, line_uses
        self.digits, self.digit_share, self.first_line = digits, digit_share, first_line

    def __iter__(self):
        worker = get_worker_info()
        seed = (self.seed + self.first_line) * 1000 + (worker.id if worker else 0)
        renderer = LineRenderer(self.fonts, seed, TRAINING_FONT_SIZES)
        shuffler = random.Random(seed)
        workers = worker.num_workers if worker else 1
        chunks, chunk = collections.deque(maxlen=self.line_uses), []
        for count in itertools.count():
            progress = min(1.0, (self.first_line + count * workers) / max(1, self.curriculum_lines))
            renderer.text.max_chars = round(CURRICULUM_START_CHARS + progress * (MAX_CHARS - CURRICULUM_START_CHARS))
            if self.digits is not None and renderer.random.random() < self.digit_share:
                chunk.append(self._example(digit_line(self.digits, renderer.random)))
            else:
                chunk.append(self._example(renderer.sample()))
            if len(chunk) == CHUNK_LINES:
                chunks.append(chunk)
                chunk = []
                round_ = [example for lines in chunks for example in lines]
                if len(chunks) > 1:  # (one chunk: the lines in the order rendered, as before --line-uses)
                    shuffler.shuffle(round_)
                yield from round_

    def _example(self, line) -> tuple[np.ndarray, list[int]]:
        return pixel_values(line.image, self.config), label_ids(self.processor, line.text)


class ColumnCtcHead(torch.nn.Module):
    """Training only (not exported): a CTC loss on the encoder's patch columns (rows averaged). It makes the encoder
    place each character at its column early, which a cross-attention decoder otherwise discovers slowly
    (hybrid CTC/attention training, as in speech recognition)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.rows, self.columns = spec.patch_grid
        self.projection = torch.nn.Linear(spec.encoder_hidden_size, spec.vocab_size)

    def loss(self, encoder_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = encoder_states.shape
        prefix = length - self.rows * self.columns  # the class token (and DeiT's distillation token) come first
        patches = encoder_states[:, prefix:].reshape(batch, self.rows, self.columns, hidden).mean(1)
        log_probs = self.projection(patches).log_softmax(-1).transpose(0, 1)  # [columns, batch, vocab]
        targets = labels.clone()
        targets[(targets == EOS) | (targets < 0)] = PAD  # the text alone; PAD is the blank
        target_lengths = (targets != PAD).sum(1)
        input_lengths = torch.full((batch,), self.columns, dtype=torch.long)
        return torch.nn.functional.ctc_loss(
            log_probs, targets, input_lengths, target_lengths, blank=PAD, zero_infinity=True
        )


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each position's logits against its own label. Not the model's `.loss`: in transformers
    4.57 a VisionEncoderDecoderModel without a loss_type falls back to the causal-LM loss, which shifts the labels
    once more (the decoder inputs are already shifted right), so it trains every position on the token after
    next and the model never learns to read."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def label_ids(processor: TrOCRProcessor, text: str) -> list[int]:
    return [*processor.tokenizer(text, add_special_tokens=False).input_ids, EOS]


def collate(batch: list[tuple[np.ndarray, list[int]]]) -> dict[str, torch.Tensor]:
    pixels, labels = zip(*batch)
    length = max(len(ids) for ids in labels)
    padded = torch.full((len(labels), length), -100, dtype=torch.long)  # -100: ignored by the loss
    for row, ids in enumerate(labels):
        padded[row, : len(ids)] = torch.tensor(ids)
    return {"pixel_values": torch.from_numpy(np.stack(pixels)), "labels": padded}


def transcribe(
    model: VisionEncoderDecoderModel, processor: TrOCRProcessor, images: list[Image.Image], batch: int = 64
) -> list[str]:
    """Greedy `generate()`, the reference the server is compared with."""
    config = server_image_config(processor)
    texts = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            pixels = torch.from_numpy(np.stack([pixel_values(im, config) for im in images[start : start + batch]]))
            ids = model.generate(pixels, num_beams=1, do_sample=False)
            texts += processor.batch_decode(ids, skip_special_tokens=True)
    return texts


def learning_rate(step: int, steps: int, peak: float, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def digit_line(digits: Digits, rng: random.Random) -> RenderedLine:
    """A field of a form in real handwritten digits, at a random size."""
    text = digit_text(rng)
    return RenderedLine(compose_line(text, digits, rng, scale=rng.uniform(*DIGIT_SCALES)), text, "mnist")


def render_lines(fonts: list[Path], seed: int, count: int, font_sizes: tuple[int, int]) -> list:
    renderer = LineRenderer(fonts, seed, font_sizes)
    return [renderer.sample() for _ in range(count)]


def write_heldout_set(directory: Path, heldout_fonts: list[Path], lines: int) -> list:
    """The held-out lines (fonts no training line uses), rendered large like a scan, as images and a manifest."""
    return write_manifest(directory, render_lines(heldout_fonts, HELDOUT_SEED, lines, HELDOUT_FONT_SIZES))


def write_heldout_digits(directory: Path, lines: int) -> list:
    """The held-out digit lines: fields of forms in MNIST digits that no training line uses."""
    digits, rng = Digits.load().split(held_out=True), random.Random(HELDOUT_SEED)
    return write_manifest(directory, [digit_line(digits, rng) for _ in range(lines)])


CHECKPOINT_FILE = "checkpoint.pt"


def checkpoint_dir(output: Path) -> Path:
    return output.with_name(output.name + ".checkpoint")


def save_checkpoint(folder: Path, state: dict) -> None:
    """Atomically: a run stopped while saving keeps its previous checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / (CHECKPOINT_FILE + ".partial")
    torch.save(state, partial)
    partial.replace(folder / CHECKPOINT_FILE)


def train(args: argparse.Namespace, argv: list[str]) -> dict:
    run_command = [arg for arg in argv if arg != "--resume"]  # what a checkpoint belongs to
    started = time.monotonic()
    torch.manual_seed(TRAINING_SEED)
    torch.set_num_threads(args.threads)
    training_fonts, heldout_fonts = load_fonts()
    spec = SPECS[args.spec]
    model, processor = build_model(spec)
    if spec.encoder_kind == "vit":
        pretrained.load_into(model.encoder, spec.encoder_layers, spec.patch_grid)
    config = server_image_config(processor)
    ctc = ColumnCtcHead(spec)
    parameters = [*model.parameters(), *ctc.parameters()]
    encoder = list(model.encoder.parameters())
    in_encoder = {id(parameter) for parameter in encoder}
    rest = [parameter for parameter in parameters if id(parameter) not in in_encoder]
    groups = [{"params": encoder, "scale": args.encoder_lr_scale}, {"params": rest, "scale": 1.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    history, first_step, earlier_minutes = [], 0, 0.0
    checkpoints = checkpoint_dir(args.output)
    if args.resume and (checkpoints / CHECKPOINT_FILE).exists():
        state = torch.load(checkpoints / CHECKPOINT_FILE, weights_only=False)
        if state["argv"] != run_command:
            raise SystemExit(f"trocr-train: {checkpoints} is of another command ({' '.join(state['argv'])}): remove it")
        model.load_state_dict(state["model"])
        ctc.load_state_dict(state["ctc"])
        optimizer.load_state_dict(state["optimizer"])
        history, first_step, earlier_minutes = state["history"], state["step"], state["minutes"]
        LOGGER.info("resuming at step %d of %d (%.1f minutes trained)", first_step, args.steps, earlier_minutes)
    validation = render_lines(training_fonts, VALIDATION_SEED, args.validation_lines, TRAINING_FONT_SIZES)
    lines_per_step = args.batch_size / args.line_uses
    lines = RenderedLines(
        training_fonts,
        TRAINING_SEED,
        config,
        processor,
        curriculum_lines=int(args.curriculum * args.steps * lines_per_step),
        line_uses=args.line_uses,
        digits=Digits.load().split(held_out=False) if args.digit_share > 0 else None,
        digit_share=args.digit_share,
        first_line=int(first_step * lines_per_step),
    )
    # (--loader-workers 0 renders in the main process, between steps; DataLoader takes these with processes only)
    background = {"prefetch_factor": 4, "persistent_workers": True} if args.loader_workers else {}
    loader = DataLoader(
        lines, batch_size=args.batch_size, num_workers=args.loader_workers, collate_fn=collate, **background
    )
    batches = iter(loader)
    for step in range(first_step, args.steps):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = group["scale"] * learning_rate(step, args.steps, args.learning_rate, args.warmup_steps)
        batch = next(batches)
        output = model(**batch)
        text_loss = token_loss(output.logits, batch["labels"])
        ctc_loss = ctc.loss(output.encoder_last_hidden_state, batch["labels"])
        loss = text_loss + args.ctc_weight * ctc_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            hypotheses = transcribe(model, processor, [line.image for line in validation])
            cer = character_error_rate([line.text for line in validation], hypotheses)
            minutes = earlier_minutes + (time.monotonic() - started) / 60
            history.append(
                {
                    "step": step + 1,
                    "loss": round(text_loss.item(), 4),
                    "ctc_loss": round(ctc_loss.item(), 4),
                    "cer": round(cer, 4),
                    "minutes": round(minutes, 2),
                }
            )
            LOGGER.info(
                "step %d  loss %.4f  CTC loss %.4f  CER %.2f%% (training fonts)  %.1f min",
                step + 1,
                text_loss.item(),
                ctc_loss.item(),
                100 * cer,
                minutes,
            )
            state = {"model": model.state_dict(), "ctc": ctc.state_dict(), "optimizer": optimizer.state_dict()}
            save_checkpoint(
                checkpoints,
                {
                    **state,
                    "step": step + 1,
                    "history": history,
                    "minutes": minutes,
                    "argv": run_command,
                },
            )
    training_minutes = earlier_minutes + (time.monotonic() - started) / 60
    model.eval()
    model.save_pretrained(args.output)
    processor.save_pretrained(args.output)
    heldout = {"heldout": write_heldout_set(args.heldout_output, heldout_fonts, args.heldout_lines)}
    if args.heldout_digit_lines:
        heldout["heldout_digits"] = write_heldout_digits(args.heldout_digits_output, args.heldout_digit_lines)
    rates = {
        f"{name}_cer": round(
            character_error_rate(
                [line.text for line in held],
                transcribe(model, processor, [Image.open(line.path).convert("RGB") for line in held]),
            ),
            4,
        )
        for name, held in heldout.items()
    }
    figures = {
        "command": " ".join(["trocr-train", *map(shlex.quote, argv)]),
        "spec": {"name": args.spec, **spec.__dict__},
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "ctc_weight": args.ctc_weight,
        "learning_rate": args.learning_rate,
        "encoder_lr_scale": args.encoder_lr_scale,
        "curriculum": args.curriculum,
        "batch_size": args.batch_size,
        "line_uses": args.line_uses,
        "digit_share": args.digit_share,
        "loader_workers": args.loader_workers,
        "training_lines": int(args.steps * lines_per_step),
        "training_minutes": round(training_minutes, 1),
        "threads": args.threads,
        "training_fonts": sorted(path.stem for path in training_fonts),
        "heldout_fonts": sorted(path.stem for path in heldout_fonts),
        "validation_cer": history[-1]["cer"],
        **rates,
        "heldout_lines": len(heldout["heldout"]),
        "history": history,
    }
    (args.output / "training.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trocr-train", description=__doc__)
    p.add_argument(
        "--output", type=Path, default=synthetic_models_dir() / "small", help="model folder (default: %(default)s)"
    )
    p.add_argument(
        "--heldout-output",
        type=Path,
        default=paths.cache_dir() / "heldout-synthetic",
        help=f"where the held-out set is written (default: %(default)s; the shipped one: {HELDOUT_SET_DIR})",
    )
    p.add_argument(
        "--heldout-digits-output",
        type=Path,
        default=paths.cache_dir() / "heldout-digits",
        help=f"where the held-out digit lines are written (default: %(default)s; shipped: {HELDOUT_DIGITS_DIR})",
    )
    p.add_argument(
        "--spec",
        choices=list(SPECS),
        default="small",
        help="the model: small (DeiT from random weights) or vit-dinov2 (ViT-S/14 from DINOv2's weights)",
    )
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument(
        "--encoder-lr-scale", type=float, default=1.0, help="the encoder's learning rate, as a share of the rest's"
    )
    p.add_argument("--curriculum", type=float, default=0.3, help="share of the steps over which lines lengthen")
    p.add_argument("--ctc-weight", type=float, default=1.0, help="of the training-only CTC loss on the encoder")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--loader-workers", type=int, default=1, help="processes rendering lines (0: the main process)")
    p.add_argument("--line-uses", type=int, default=1, help="times each rendered line is trained on")
    p.add_argument("--digit-share", type=float, default=0.0, help="share of lines in real MNIST digits")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint beside --output (saved at each check), if the same command left one",
    )
    p.add_argument("--eval-every", type=int, default=300, help="steps between checks on the validation lines")
    p.add_argument("--validation-lines", type=int, default=128)
    p.add_argument("--heldout-lines", type=int, default=200)
    p.add_argument("--heldout-digit-lines", type=int, default=200, help="0: no held-out digit lines")
    p.add_argument("--heldout-only", action="store_true", help="only render the held-out set (no training)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    configure_logging(args.verbose)
    if args.heldout_only:
        lines = write_heldout_set(args.heldout_output, load_fonts()[1], args.heldout_lines)
        digit_lines = write_heldout_digits(args.heldout_digits_output, args.heldout_digit_lines)
        print(
            f"{len(lines)} held-out lines written to {args.heldout_output}, {len(digit_lines)} digit lines to "
            f"{args.heldout_digits_output}"
        )
        return
    print(json.dumps({k: v for k, v in train(args, argv).items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()
