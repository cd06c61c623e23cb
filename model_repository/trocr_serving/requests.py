"""Validation of one `trocr` request: pure logic, so it is unit-tested without a server."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from trocr_client import protocol
from trocr_serving.pipeline_config import PipelineConfig
from trocr_serving.preprocessing import InvalidImageError, decode_image


class InvalidRequestError(ValueError):
    """The request cannot be served as sent; the message names the input and the problem."""


@dataclass
class Job:
    """The images of one request and their decoding limits."""

    images: list[Image.Image]
    max_new_tokens: np.ndarray  # one per image


def _per_row(name: str, values: np.ndarray | None, rows: int) -> np.ndarray | None:
    if values is None:
        return None
    values = np.asarray(values).reshape(-1)
    if values.size != rows:
        raise InvalidRequestError(f"{name} has {values.size} values for {rows} images: send one per image")
    return values.astype(np.int64)


def parse_request(
    images: np.ndarray,
    max_new_tokens: np.ndarray | None,
    num_beams: np.ndarray | None,
    config: PipelineConfig,
) -> Job:
    encoded = np.asarray(images, dtype=object).reshape(-1)
    if encoded.size == 0:
        raise InvalidRequestError(f"{protocol.INPUT_IMAGE} is empty: send at least one image")
    beams = _per_row(protocol.INPUT_NUM_BEAMS, num_beams, encoded.size)
    if beams is not None and np.any(beams != 1):
        raise InvalidRequestError(
            f"{protocol.INPUT_NUM_BEAMS}={int(beams[beams != 1][0])} is not supported yet: "
            "only greedy decoding (num_beams=1) is available"
        )
    limit = config.max_new_tokens_limit
    tokens = _per_row(protocol.INPUT_MAX_NEW_TOKENS, max_new_tokens, encoded.size)
    if tokens is None:
        tokens = np.full(encoded.size, config.generation.max_new_tokens, dtype=np.int64)
    elif np.any((tokens < 1) | (tokens > limit)):
        bad = int(tokens[(tokens < 1) | (tokens > limit)][0])
        raise InvalidRequestError(f"{protocol.INPUT_MAX_NEW_TOKENS}={bad} is out of range: use 1..{limit}")
    decoded = []
    for index, data in enumerate(encoded):
        if not isinstance(data, bytes | bytearray | np.bytes_):
            raise InvalidRequestError(f"image {index}: expected encoded image bytes, got {type(data).__name__}")
        try:
            decoded.append(decode_image(bytes(data)))
        except InvalidImageError as exc:
            raise InvalidRequestError(f"image {index}: {exc}") from None
    return Job(images=decoded, max_new_tokens=tokens)
