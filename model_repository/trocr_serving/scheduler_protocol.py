"""The tensors between the `trocr` front instances and the `scheduler` model (internal, not a public API)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trocr_client import protocol
from trocr_client.protocol import TensorSpec
from trocr_serving import graph_names as names
from trocr_serving.engine.search import SearchParams, SearchResult
from trocr_serving.front.requests import per_row
from trocr_serving.pipeline_config import PipelineConfig
from trocr_serving.refusals import InvalidRequestError
from trocr_serving.tensors import output_tensors

MODEL_NAME = "scheduler"
# Where the engine's graphs live (encoder.onnx, decoder.onnx, row_copy.onnx), relative to the repository.
GRAPHS_FOLDER = f"{MODEL_NAME}/1"

MAX_NEW_TOKENS = "max_new_tokens"
NUM_BEAMS = "num_beams"
IGNORE_EOS = "ignore_eos"
TOKEN_IDS = protocol.OUTPUT_TOKEN_IDS
SCORE = protocol.OUTPUT_SCORE


INPUTS = (
    # Resized as the image processor does; height and width are the model's (its config states them).
    TensorSpec(names.PIXELS, "UINT8", (-1, 3, -1, -1)),
    TensorSpec(MAX_NEW_TOKENS, "INT32", (-1,)),
    TensorSpec(NUM_BEAMS, "INT32", (-1,)),
    TensorSpec(IGNORE_EOS, "BOOL", (-1,)),
)
INPUT_NAMES = tuple(spec.name for spec in INPUTS)
OUTPUTS = (
    TensorSpec(TOKEN_IDS, "INT32", (-1, -1)),  # padded with protocol.TOKEN_IDS_PADDING
    TensorSpec(SCORE, "FP32", (-1,)),
)
OUTPUT_NAMES = tuple(spec.name for spec in OUTPUTS)


def request_arrays(pixels, max_new_tokens, num_beams, ignore_eos) -> dict[str, np.ndarray]:
    values = (pixels, max_new_tokens, num_beams, ignore_eos)
    return {spec.name: np.ascontiguousarray(value, dtype=spec.numpy_dtype) for spec, value in zip(INPUTS, values)}


def search_params(inputs: dict[str, np.ndarray], config: PipelineConfig) -> list[SearchParams]:
    """One SearchParams per image, checked like the public model's parameters: the scheduler is reachable
    over gRPC streaming too, and must hold its own bounds."""
    pixels = inputs[names.PIXELS]
    rows = len(pixels)
    if not 1 <= rows <= protocol.MAX_IMAGES_PER_REQUEST:
        raise InvalidRequestError(f"{rows} images in one request: send 1..{protocol.MAX_IMAGES_PER_REQUEST}")
    image_shape = (3, config.image.height, config.image.width)
    if pixels.dtype != np.uint8 or pixels.shape[1:] != image_shape:
        raise InvalidRequestError(
            f"{names.PIXELS} is {pixels.dtype} {list(pixels.shape)}: send UINT8 "
            f"[images, {', '.join(map(str, image_shape))}]"
        )
    tokens = per_row(MAX_NEW_TOKENS, inputs[MAX_NEW_TOKENS], rows, None, 1, config.max_new_tokens_limit)
    beams = per_row(NUM_BEAMS, inputs[NUM_BEAMS], rows, None, 1, protocol.MAX_NUM_BEAMS)
    ignore = per_row(IGNORE_EOS, inputs[IGNORE_EOS], rows, None, 0, 1)
    defaults = config.generation
    return [
        SearchParams(
            max_new_tokens=int(tokens),
            eos_token_id=defaults.eos_token_id,
            decoder_start_token_id=defaults.decoder_start_token_id,
            num_beams=int(beams),
            length_penalty=defaults.length_penalty,
            early_stopping=defaults.early_stopping,
            no_repeat_ngram_size=defaults.no_repeat_ngram_size,
            ignore_eos=bool(ignore),
        )
        for tokens, beams, ignore in zip(tokens, beams, ignore)
    ]


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the decoder, so that it cannot hold every row for minutes."""

    max_rows: int  # decoder rows of the server: a wider image (num_beams) can never run
    max_row_tokens: int  # sum over the images of num_beams x max_new_tokens

    def check(self, params: list[SearchParams]) -> None:
        widest = max(p.num_beams for p in params)
        if widest > self.max_rows:
            raise InvalidRequestError(
                f"num_beams={widest} needs {widest} decoder rows; the server has {self.max_rows}: use fewer beams"
            )
        row_tokens = sum(p.num_beams * p.max_new_tokens for p in params)
        if row_tokens > self.max_row_tokens:
            raise InvalidRequestError(
                f"request asks for {row_tokens} beam-tokens (images x num_beams x max_new_tokens); the limit per "
                f"request is {self.max_row_tokens}: split the request or lower num_beams or max_new_tokens"
            )


def padded_token_ids(results: list[SearchResult]) -> np.ndarray:
    longest = max(len(r.token_ids) for r in results)
    token_ids = np.full((len(results), longest), protocol.TOKEN_IDS_PADDING, dtype=np.int64)
    for row, result in enumerate(results):
        token_ids[row, : len(result.token_ids)] = result.token_ids
    return token_ids


def result_tensors(results: list[SearchResult], tensor_type) -> list:
    values = {TOKEN_IDS: padded_token_ids(results), SCORE: [r.score for r in results]}
    return output_tensors(OUTPUTS, values, tensor_type)
