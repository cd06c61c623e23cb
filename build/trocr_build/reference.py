"""The reference a served model is held to: Hugging Face's own image processor and `generate()`, same weights.

The image processor is the PIL one. Under transformers 5, `ViTImageProcessor` resizes with torchvision when
torchvision is installed, which differs from PIL's bilinear resize by up to one grey level (2.84% of the
pixels of the trained model's held-out lines; greedy output changed on 2 of 60 lines); the PIL processor
(`backend="pil"`, `ViTImageProcessorPil`) is what the server's preprocessing reproduces bit for bit, so parity
is defined against it. transformers 4.57 (no backends) gets its slow processor, the same PIL arithmetic.
"""

from __future__ import annotations

import transformers
from transformers import AutoProcessor

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
# How each transformers line is asked for its PIL image processor, and that processor's class for ViT.
PIL_PROCESSOR = {"backend": "pil"} if TRANSFORMERS_MAJOR >= 5 else {"use_fast": False}
VIT_PIL_IMAGE_PROCESSOR = (
    transformers.ViTImageProcessorPil if TRANSFORMERS_MAJOR >= 5 else transformers.ViTImageProcessor
)


def reference_processor(model_dir):
    """The model's processor (tokenizer and PIL image processor) from a Hugging Face model directory or id."""
    return AutoProcessor.from_pretrained(model_dir, **PIL_PROCESSOR)
