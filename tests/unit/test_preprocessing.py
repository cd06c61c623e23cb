import io

import numpy as np
import pytest
import torch
from PIL import Image

from tests.images import NOT_AN_IMAGE, sample_paths, text_line, truncated_png
from trocr_build.graphs import PixelNormalization
from trocr_build.reference import TRANSFORMERS_MAJOR, VIT_PIL_IMAGE_PROCESSOR, reference_processor
from trocr_client.protocol import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from trocr_serving.front.preprocessing import InvalidImageError, decode_image, normalize, pixels_of
from trocr_serving.pipeline_config import ImageConfig

CONFIG = ImageConfig(
    height=384, width=384, resample=2, rescale_factor=1 / 255, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)
)


def hf_processor():
    return VIT_PIL_IMAGE_PROCESSOR(
        size={"height": 384, "width": 384},
        resample=2,
        rescale_factor=1 / 255,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.name)
def test_resized_pixels_normalised_match_the_models_image_processor(path):
    image = decode_image(path.read_bytes())
    expected = hf_processor()(images=[image], return_tensors="np").pixel_values
    pixels = pixels_of([image], CONFIG)
    assert pixels.shape == (1, 3, 384, 384) and pixels.dtype == np.uint8  # what the front sends
    got = normalize(pixels, CONFIG)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)  # the processor's own arithmetic: equal, not close


def test_the_encoder_graphs_normalisation_is_the_processors():
    """What the exported encoder computes first (PixelNormalization, in torch) is normalize(), bit for bit."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 384, 384), dtype=np.uint8)
    with torch.no_grad():
        graph = PixelNormalization(CONFIG)(torch.from_numpy(pixels)).numpy()
    np.testing.assert_array_equal(graph, normalize(pixels, CONFIG))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB", "CMYK"])
def test_every_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = decode_image(text_line("mode", mode=mode, fmt=fmt))
    assert image.mode == "RGB"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP", "WEBP"])
def test_supported_formats_decode(fmt):
    assert decode_image(text_line(fmt, fmt=fmt)).size == (320, 48)


def test_batch_rows_are_independent():
    a, b = decode_image(text_line("first")), decode_image(text_line("second"))
    batch = pixels_of([a, b], CONFIG)
    np.testing.assert_array_equal(batch[1], pixels_of([b], CONFIG)[0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty image"),
        (NOT_AN_IMAGE, "not a decodable image"),
        (truncated_png(), "truncated"),
    ],
    ids=["empty", "not-an-image", "truncated"],
)
def test_bad_images_name_the_problem(data, message):
    with pytest.raises(InvalidImageError, match=message):
        decode_image(data)


def test_oversized_bytes_are_refused_before_decoding():
    with pytest.raises(InvalidImageError, match="exceeds the limit"):
        decode_image(b"\x89PNG" + b"\0" * MAX_IMAGE_BYTES)


def test_too_many_pixels_is_refused():
    side = int(MAX_IMAGE_PIXELS**0.5) + 10
    buffer = io.BytesIO()
    Image.new("L", (side, side), 255).save(buffer, format="PNG")
    with pytest.raises(InvalidImageError, match="pixels exceeds the limit"):
        decode_image(buffer.getvalue())


def test_unsupported_format_is_refused():
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="GIF")
    with pytest.raises(InvalidImageError, match="supported formats are PNG"):
        decode_image(buffer.getvalue())


def _encoded(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def test_16_bit_grayscale_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))  # black to white
    decoded = np.asarray(decode_image(_encoded(Image.fromarray(ramp))))
    assert decoded.shape == (8, 64, 3)
    np.testing.assert_array_equal(decoded[0, :, 0], np.rint(ramp[0] / 257).astype(np.uint8))
    assert decoded.min() == 0 and decoded.max() == 255


def test_float_image_is_read_as_zero_to_one():
    gray = np.full((4, 6), 0.5, dtype=np.float32)
    assert np.asarray(decode_image(_encoded(Image.fromarray(gray), "TIFF")))[0, 0].tolist() == [128, 128, 128]


def test_exif_orientation_is_applied():
    upright = Image.new("RGB", (40, 10), "white")
    upright.paste((0, 0, 0), (0, 0, 10, 10))  # black square at the left end
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera stores a turned shot: 10 x 40
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    decoded = decode_image(_encoded(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.size == (40, 10)
    pixels = np.asarray(decoded.convert("L"))
    assert pixels[:, :8].mean() < 60 and pixels[:, -8:].mean() > 200


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_images_of_several_frames_are_refused(fmt):
    frames = [Image.new("RGB", (20, 10), color) for color in ("white", "black")]
    data = _encoded(frames[0], fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImageError, match="has 2 frames"):
        decode_image(data)


def test_the_reference_is_the_pil_image_processor(built_tiny):
    """Parity is defined against the PIL processor, which the server reproduces bit for bit (transformers 5's
    default with torchvision installed resizes with torchvision: up to one grey level apart)."""
    processor = reference_processor(built_tiny.info["source"])
    assert isinstance(processor.image_processor, VIT_PIL_IMAGE_PROCESSOR)
    assert type(processor.image_processor).__name__ == (
        "ViTImageProcessorPil" if TRANSFORMERS_MAJOR >= 5 else "ViTImageProcessor"
    )
