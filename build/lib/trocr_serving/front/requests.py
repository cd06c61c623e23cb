"""Validation of one `trocr` request: pure logic, so it is unit-tested without a server."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np

from trocr_client import protocol
from trocr_serving.front.preprocessing import InvalidImageError, decode_image, image_pixels, resize
from trocr_serving.pipeline_config import PipelineConfig
from trocr_serving.refusals import InvalidRequestError, shown


@dataclass
class Job:
    """The preprocessed good images of one request and their decoding parameters (one value per good image),
    and each input image's error (None where it is good)."""

    pixels: np.ndarray  # UINT8 [good images, 3, height, width]: resized, normalised by the encoder graph
    max_new_tokens: np.ndarray
    num_beams: np.ndarray
    ignore_eos: np.ndarray
    errors: list[str | None]  # one per input image

    @property
    def good_rows(self) -> list[int]:
        return [index for index, error in enumerate(self.errors) if error is None]


# Parameters that Triton or a KServe client sets for the transport (handled before the model sees them, or
# meaningless to it): not refused.
TRANSPORT_PARAMETERS = frozenset(
    {"timeout", "priority", "sequence_id", "sequence_start", "sequence_end", "binary_data_output", "headers"}
)


def _parameters_json(raw: str | bytes | None) -> dict:
    """The parameters' JSON; bytes when a value is not UTF-8 (Triton passes it on), refused naming the parameter."""
    if not isinstance(raw, bytes):
        return json.loads(raw or "{}")
    try:
        return json.loads(raw.decode())
    except UnicodeDecodeError:
        parameters = json.loads(raw.decode(errors="surrogateescape"))
        bad = [k for k, v in parameters.items() if not _is_utf8(k) or (isinstance(v, str) and not _is_utf8(v))]
        named = f"request parameter {shown(bad[0].encode(errors='surrogateescape'))}" if bad else "a request parameter"
        raise InvalidRequestError(f"{named} is not valid UTF-8") from None


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a surrogate-escaped byte
        return False
    return True


def request_parameters(raw: str | bytes | None) -> dict:
    """The request's KServe parameters (Triton hands them over as JSON) that the model takes, checked: an
    unknown one is refused, never ignored."""
    parameters = {k: v for k, v in _parameters_json(raw).items() if k not in TRANSPORT_PARAMETERS}
    unknown = sorted(set(parameters) - set(protocol.REQUEST_PARAMETERS))
    if unknown:
        raise InvalidRequestError(
            f"unknown request parameter {shown(unknown[0])}: this model takes {', '.join(protocol.REQUEST_PARAMETERS)}"
        )
    for name in (protocol.INPUT_MAX_NEW_TOKENS, protocol.INPUT_NUM_BEAMS):
        if name in parameters and (isinstance(parameters[name], bool) or not isinstance(parameters[name], int)):
            raise InvalidRequestError(f"request parameter {name} must be an integer, got {shown(parameters[name])}")
    if not isinstance(parameters.get(protocol.INPUT_IGNORE_EOS, False), bool):
        raise InvalidRequestError(f"request parameter {protocol.INPUT_IGNORE_EOS} must be true or false")
    encoding = parameters.get(protocol.PARAMETER_IMAGE_ENCODING, protocol.IMAGE_ENCODINGS[0])
    if encoding not in protocol.IMAGE_ENCODINGS:
        raise InvalidRequestError(
            f"request parameter {protocol.PARAMETER_IMAGE_ENCODING}={shown(encoding)}: use one of "
            f"{', '.join(protocol.IMAGE_ENCODINGS)}"
        )
    return parameters


def per_row(name: str, values: np.ndarray | None, rows: int, default, low: int, high: int) -> np.ndarray:
    """One value per image: the default when absent, else checked against low..high."""
    if values is None:
        return np.full(rows, default)
    values = np.asarray(values).reshape(-1)
    if values.size != rows:
        raise InvalidRequestError(f"{name} has {values.size} values for {rows} images: send one per image")
    bad = (values < low) | (values > high)
    if np.any(bad):
        raise InvalidRequestError(f"{name}={values[bad][0]} is out of range: use {low}..{high}")
    return values


def _tensor_or_parameter(name: str, tensor: np.ndarray | None, parameters: dict, rows: int) -> np.ndarray | None:
    if name not in parameters:
        return tensor
    if tensor is not None:
        raise InvalidRequestError(f"{name} is both an input tensor and a request parameter: send one of them")
    return np.full(rows, int(parameters[name]))


def parse_request(
    images: np.ndarray,
    max_new_tokens: np.ndarray | None,
    num_beams: np.ndarray | None,
    config: PipelineConfig,
    ignore_eos: np.ndarray | None = None,
    parameters: dict | None = None,
) -> Job:
    """`parameters`: the checked request parameters (request_parameters)."""
    parameters = parameters or {}
    encoded = np.asarray(images, dtype=object).reshape(-1)
    if encoded.size == 0:
        raise InvalidRequestError(f"{protocol.INPUT_IMAGE} is empty: send at least one image")
    if encoded.size > protocol.MAX_IMAGES_PER_REQUEST:
        raise InvalidRequestError(
            f"{encoded.size} images in one request exceed the limit of {protocol.MAX_IMAGES_PER_REQUEST}: split it"
        )
    rows, defaults = encoded.size, config.generation
    max_new_tokens = _tensor_or_parameter(protocol.INPUT_MAX_NEW_TOKENS, max_new_tokens, parameters, rows)
    num_beams = _tensor_or_parameter(protocol.INPUT_NUM_BEAMS, num_beams, parameters, rows)
    ignore_eos = _tensor_or_parameter(protocol.INPUT_IGNORE_EOS, ignore_eos, parameters, rows)
    tokens = per_row(
        protocol.INPUT_MAX_NEW_TOKENS, max_new_tokens, rows, defaults.max_new_tokens, 1, config.max_new_tokens_limit
    )
    beams = per_row(protocol.INPUT_NUM_BEAMS, num_beams, rows, defaults.num_beams, 1, protocol.MAX_NUM_BEAMS)
    ignore = per_row(protocol.INPUT_IGNORE_EOS, ignore_eos, rows, False, 0, 1).astype(bool)
    base64_text = parameters.get(protocol.PARAMETER_IMAGE_ENCODING) == "base64"
    errors: list[str | None] = [None] * rows
    raw: list[bytes] = [b""] * rows
    for index, data in enumerate(encoded):
        try:
            raw[index] = _image_bytes(data, base64_text)
        except InvalidImageError as exc:
            errors[index] = f"image {index}: {exc}"
    _check_request_size([data for data, error in zip(raw, errors) if error is None])
    image = config.image
    pixels = np.empty((rows, 3, image.height, image.width), dtype=np.uint8)
    for index, data in enumerate(raw):  # one decoded image in memory at a time
        if errors[index] is None:
            try:
                pixels[index] = resize(decode_image(data), image)
            except InvalidImageError as exc:
                errors[index] = f"image {index}: {exc}"
    good = [index for index, error in enumerate(errors) if error is None]
    if not good:
        listed = "; ".join(errors[:3]) + (f"; and {rows - 3} more" if rows > 3 else "")
        raise InvalidRequestError(listed if rows == 1 else f"{protocol.ALL_IMAGES_BAD}: {listed}")
    return Job(pixels[good], tokens[good], beams[good], ignore[good], errors)


def _image_bytes(data, base64_text: bool) -> bytes:
    """An `image` element's encoded image bytes; base64 text (JSON bodies) decoded."""
    if not isinstance(data, bytes | bytearray | np.bytes_):
        raise InvalidImageError(f"expected encoded image bytes, got {type(data).__name__}")
    if not base64_text:
        return bytes(data)
    try:
        return base64.b64decode(bytes(data), validate=True)
    except binascii.Error as exc:
        raise InvalidImageError(f"not valid base64 ({protocol.PARAMETER_IMAGE_ENCODING}=base64): {exc}") from None


def _check_request_size(encoded: list) -> None:
    """The bounds of a whole request, checked from sizes and image headers before anything is decoded."""
    total_bytes = sum(len(data) for data in encoded)
    if total_bytes > protocol.MAX_REQUEST_BYTES:
        raise InvalidRequestError(
            f"request of {total_bytes} bytes of images exceeds the limit of {protocol.MAX_REQUEST_BYTES} bytes: "
            "split it"
        )
    total_pixels = sum(image_pixels(bytes(data)) for data in encoded)
    if total_pixels > protocol.MAX_REQUEST_PIXELS:
        raise InvalidRequestError(
            f"request of {total_pixels} pixels exceeds the limit of {protocol.MAX_REQUEST_PIXELS} pixels per request: "
            "split it or send smaller images"
        )
