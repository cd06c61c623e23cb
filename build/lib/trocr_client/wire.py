"""The `trocr` model's tensors on the wire: the request a client builds and the per-image results it reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient

from trocr_client import protocol


@dataclass(frozen=True)
class Result:
    text: str
    score: float  # mean log-probability of the generated tokens: closer to 0 is more confident
    token_ids: tuple[int, ...] = ()  # the generated ids, end-of-sequence included
    error_code: int = protocol.ERROR_CODE_OK  # else the gRPC status code of this image's own error
    error: str = ""  # the server's message naming this image's problem
    index: int = 0  # the image's position in the caller's input (in a raw response: its row)

    @property
    def ok(self) -> bool:
        return self.error_code == protocol.ERROR_CODE_OK


def build_inputs(
    encoded: Sequence[bytes],
    max_new_tokens: int | None = None,
    num_beams: int | None = None,
    ignore_eos: bool | None = None,
) -> list[grpcclient.InferInput]:
    """The request tensors: one row per image, shape [rows, 1]; parameters left out take the model's defaults."""
    rows = len(encoded)
    values = {
        protocol.INPUT_IMAGE: list(encoded),
        protocol.INPUT_MAX_NEW_TOKENS: max_new_tokens,
        protocol.INPUT_NUM_BEAMS: num_beams,
        protocol.INPUT_IGNORE_EOS: ignore_eos,
    }
    inputs = []
    for spec in protocol.INPUTS:
        value = values[spec.name]
        if value is not None:
            tensor = grpcclient.InferInput(spec.name, [rows, 1], spec.datatype)
            array = np.empty(rows, dtype=spec.numpy_dtype)
            array[:] = value
            tensor.set_data_from_numpy(array.reshape(rows, 1))
            inputs.append(tensor)
    return inputs


def parse_outputs(response) -> list[Result]:
    texts = response.as_numpy(protocol.OUTPUT_TEXT).reshape(-1)
    scores = response.as_numpy(protocol.OUTPUT_SCORE).reshape(-1)
    token_ids = response.as_numpy(protocol.OUTPUT_TOKEN_IDS)
    codes = response.as_numpy(protocol.OUTPUT_ERROR_CODE).reshape(-1)
    errors = response.as_numpy(protocol.OUTPUT_ERROR).reshape(-1)
    return [
        Result(
            text.decode("utf-8", errors="replace"),
            float(score),
            tuple(int(t) for t in ids if t != protocol.TOKEN_IDS_PADDING),
            int(code),
            error.decode("utf-8", errors="replace"),
            row,
        )
        for row, (text, score, ids, code, error) in enumerate(zip(texts, scores, token_ids, codes, errors))
    ]
