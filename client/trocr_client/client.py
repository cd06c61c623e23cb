"""A small client for the `trocr` model over gRPC (tritonclient)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from trocr_client import protocol
from trocr_client.errors import ServerUnavailableError, from_triton
from trocr_client.images import ImageLike, encode_image

DEFAULT_URL = "127.0.0.1:8001"


@dataclass(frozen=True)
class Result:
    text: str
    score: float  # mean log-probability of the generated tokens: closer to 0 is more confident
    token_ids: tuple[int, ...] = ()  # the generated ids, end-of-sequence included
    error_code: int = protocol.ERROR_CODE_OK  # else the gRPC status code of this image's own error
    error: str = ""  # the server's message naming this image's problem

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
    images = grpcclient.InferInput(protocol.INPUT_IMAGE, [rows, 1], "BYTES")
    images.set_data_from_numpy(np.array(list(encoded), dtype=object).reshape(rows, 1))
    inputs = [images]
    for name, value, dtype, triton_type in (
        (protocol.INPUT_MAX_NEW_TOKENS, max_new_tokens, np.int32, "INT32"),
        (protocol.INPUT_NUM_BEAMS, num_beams, np.int32, "INT32"),
        (protocol.INPUT_IGNORE_EOS, ignore_eos, bool, "BOOL"),
    ):
        if value is not None:
            tensor = grpcclient.InferInput(name, [rows, 1], triton_type)
            tensor.set_data_from_numpy(np.full((rows, 1), value, dtype=dtype))
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
        )
        for text, score, ids, code, error in zip(texts, scores, token_ids, codes, errors)
    ]


class TrOCRClient:
    def __init__(self, url: str = DEFAULT_URL, model_name: str = protocol.MODEL_NAME, timeout_s: float | None = 120.0):
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url)

    def is_ready(self) -> bool:
        try:
            return self._client.is_model_ready(self.model_name)
        except InferenceServerException:
            return False

    def transcribe(
        self,
        images: ImageLike | Iterable[ImageLike],
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        timeout_s: float | None = None,
        ignore_eos: bool | None = None,
    ) -> list[Result]:
        """Text and score for each image, in order. Raises a trocr_client.errors.TrOCRError on failure.

        `timeout_s` is both the gRPC deadline and the server-side deadline: a request that runs out of time
        frees its decoder rows on the server. `ignore_eos` is for benchmarks (exactly max_new_tokens tokens).
        """
        if isinstance(images, str | bytes | bytearray | np.ndarray) or not isinstance(images, Iterable):
            images = [images]
        encoded = [encode_image(image) for image in images]
        results: list[Result] = []
        for start in range(0, len(encoded), protocol.MAX_IMAGES_PER_REQUEST):
            chunk = encoded[start : start + protocol.MAX_IMAGES_PER_REQUEST]
            try:
                deadline_s = timeout_s if timeout_s is not None else self.timeout_s
                response = self._client.infer(
                    self.model_name,
                    build_inputs(chunk, max_new_tokens, num_beams, ignore_eos),
                    client_timeout=deadline_s,
                    timeout=int(deadline_s * 1e6) if deadline_s else None,
                )
            except InferenceServerException as exc:
                raise from_triton(exc) from None
            except OSError as exc:
                raise ServerUnavailableError(str(exc)) from exc
            results.extend(parse_outputs(response))
        return results

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TrOCRClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def transcribe(images: ImageLike | Iterable[ImageLike], url: str = DEFAULT_URL, **kwargs) -> list[Result]:
    """One-shot helper: `transcribe(["line.png"]) -> [Result(text, score)]`."""
    with TrOCRClient(url) as client:
        return client.transcribe(images, **kwargs)
