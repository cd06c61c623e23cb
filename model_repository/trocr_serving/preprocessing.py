"""Image decoding and preprocessing, exactly as the model's own image processor does it.

TrOCR's ViTImageProcessor: convert to RGB, resize with PIL (bilinear) to the model's size, rescale by 1/255
in float64, cast to float32, normalise with the processor's mean and std, channels first.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from trocr_client.protocol import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, SUPPORTED_IMAGE_FORMATS
from trocr_serving.pipeline_config import ImageConfig


class InvalidImageError(ValueError):
    """An image that cannot be used; the message names the problem."""


def decode_image(data: bytes) -> Image.Image:
    """Decode one encoded image to RGB, or raise InvalidImageError saying why not."""
    if len(data) == 0:
        raise InvalidImageError("empty image (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImageError(f"image of {len(data)} bytes exceeds the limit of {MAX_IMAGE_BYTES} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_IMAGE_FORMATS)
            pixels = image.width * image.height
            if pixels > MAX_IMAGE_PIXELS:
                raise InvalidImageError(
                    f"image of {image.width}x{image.height} pixels exceeds the limit of {MAX_IMAGE_PIXELS} pixels"
                )
            image.load()
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"not a decodable image: supported formats are {', '.join(SUPPORTED_IMAGE_FORMATS)}"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        # PIL reports truncated or corrupt data as OSError ("image file is truncated") or SyntaxError.
        raise InvalidImageError(f"corrupt or truncated {image.format or ''} image: {exc}".replace("  ", " ")) from None
    if image.width < 1 or image.height < 1:
        raise InvalidImageError(f"image has no pixels ({image.width}x{image.height})")
    return image if image.mode == "RGB" else image.convert("RGB")


def preprocess(images: list[Image.Image], config: ImageConfig) -> np.ndarray:
    """RGB images -> pixel_values FP32 [batch, 3, height, width]."""
    pixel_values = np.empty((len(images), 3, config.height, config.width), dtype=np.float32)
    mean = np.asarray(config.image_mean, dtype=np.float32)
    std = np.asarray(config.image_std, dtype=np.float32)
    for row, image in enumerate(images):
        resized = image.resize((config.width, config.height), resample=config.resample)
        scaled = (np.asarray(resized, dtype=np.float64) * config.rescale_factor).astype(np.float32)
        pixel_values[row] = ((scaled - mean) / std).transpose(2, 0, 1)
    return pixel_values
