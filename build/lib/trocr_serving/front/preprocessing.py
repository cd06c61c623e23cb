"""Image decoding and resizing, exactly as the model's own image processor does it; the rest runs in the encoder.

TrOCR's ViTImageProcessor: convert to RGB, resize with PIL (bilinear) to the model's size, rescale by 1/255
in float64, cast to float32, normalise with the processor's mean and std, channels first. The server does the
first two here and sends the resized image as uint8 (a quarter of float32's bytes); the rescaling and the
normalisation are the first nodes of the exported encoder graph (trocr_build.graphs.PixelNormalization), whose
output the build checks against the image processor. `normalize` is the same arithmetic in numpy, for training
and checks.

Before that, decoding reads every image the way a person looking at it would: the EXIF orientation is
applied (a phone photo of a line is upright, as the model's processor would see it once turned), 16-bit and
32-bit integer images are scaled to 8 bits (PIL's own conversion clips them, so a 16-bit scan came out all
white), float images are read as 0..1, and an image of several frames (animated PNG or WebP, multi-page
TIFF) is refused: which frame holds the text is the caller's choice.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise InvalidImageError(f"{image.format} image has {frames} frames (animated or multi-page): send one frame")
    image = _to_8_bits(ImageOps.exif_transpose(image))
    return image if image.mode == "RGB" else image.convert("RGB")


# Integer modes wider than 8 bits: PIL's convert("RGB") clips them at 255 instead of scaling.
_HIGH_BIT_DEPTH_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _to_8_bits(image: Image.Image) -> Image.Image:
    """Grayscale images of more than 8 bits per pixel as 8-bit "L" (16-bit range for integers, 0..1 for floats)."""
    if image.mode in _HIGH_BIT_DEPTH_INTEGER_MODES:
        scale = 255 / 65535
    elif image.mode == "F":
        scale = 255.0
    else:
        return image
    values = np.asarray(image, dtype=np.float64) * scale
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def image_pixels(data: bytes) -> int:
    """Width x height from the image's header, without decoding it (0 if unreadable: decoding says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=SUPPORTED_IMAGE_FORMATS) as image:
            return image.width * image.height
    except Exception:
        return 0


def pixels_of(images: list[Image.Image], config: ImageConfig) -> np.ndarray:
    """RGB images -> the encoder's input: UINT8 [batch, 3, height, width]."""
    pixels = np.empty((len(images), 3, config.height, config.width), dtype=np.uint8)
    for row, image in enumerate(images):
        pixels[row] = resize(image, config)
    return pixels


def resize(image: Image.Image, config: ImageConfig) -> np.ndarray:
    """One RGB image, resized as the image processor does -> UINT8 [3, height, width]."""
    resized = image.resize((config.width, config.height), resample=config.resample)
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)


def normalize(pixels: np.ndarray, config: ImageConfig) -> np.ndarray:
    """UINT8 [..., 3, height, width] -> the model's pixel_values, FP32: rescaled in float64, then normalised in
    float32, as the image processor does (and the encoder graph's first nodes)."""
    mean = np.asarray(config.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(config.image_std, dtype=np.float32)[:, None, None]
    scaled = (pixels.astype(np.float64) * config.rescale_factor).astype(np.float32)
    return (scaled - mean) / std
