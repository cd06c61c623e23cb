"""The tensors between the `trocr` front instances and the `scheduler` model (internal, not a public API)."""

from __future__ import annotations

import numpy as np

from trocr_client import protocol
from trocr_serving import graph_names as names
from trocr_serving.pipeline_config import GenerationDefaults
from trocr_serving.search import SearchParams, SearchResult

MODEL_NAME = "scheduler"

MAX_NEW_TOKENS = "max_new_tokens"  # INT32 [images]
NUM_BEAMS = "num_beams"  # INT32 [images]
IGNORE_EOS = "ignore_eos"  # BOOL [images]
INPUTS = (names.PIXEL_VALUES, MAX_NEW_TOKENS, NUM_BEAMS, IGNORE_EOS)

TOKEN_IDS = protocol.OUTPUT_TOKEN_IDS  # INT32 [images, longest], padded
SCORE = protocol.OUTPUT_SCORE  # FP32 [images]
OUTPUTS = (TOKEN_IDS, SCORE)


def request_arrays(pixel_values, max_new_tokens, num_beams, ignore_eos) -> dict[str, np.ndarray]:
    return {
        names.PIXEL_VALUES: np.ascontiguousarray(pixel_values, dtype=np.float32),
        MAX_NEW_TOKENS: np.asarray(max_new_tokens, dtype=np.int32),
        NUM_BEAMS: np.asarray(num_beams, dtype=np.int32),
        IGNORE_EOS: np.asarray(ignore_eos, dtype=bool),
    }


def search_params(inputs: dict[str, np.ndarray], defaults: GenerationDefaults) -> list[SearchParams]:
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
        for tokens, beams, ignore in zip(inputs[MAX_NEW_TOKENS], inputs[NUM_BEAMS], inputs[IGNORE_EOS])
    ]


def padded_token_ids(results: list[SearchResult]) -> np.ndarray:
    longest = max(len(r.token_ids) for r in results)
    token_ids = np.full((len(results), longest), protocol.TOKEN_IDS_PADDING, dtype=np.int32)
    for row, result in enumerate(results):
        token_ids[row, : len(result.token_ids)] = result.token_ids
    return token_ids


def result_tensors(results: list[SearchResult], tensor_type) -> list:
    scores = np.array([r.score for r in results], dtype=np.float32)
    return [tensor_type(TOKEN_IDS, padded_token_ids(results)), tensor_type(SCORE, scores)]
