"""Triton model `trocr`: the public entry point (BLS).

Decodes and preprocesses the images of every request in the batch, calls `encoder` once for all of them
(in chunks of its max batch size), runs greedy decoding over `decoder`, and detokenizes. A request with a
bad image or parameter gets its own INVALID_ARG error; the others in the batch are served.
"""

# First: puts the project environment on the path (see trocr_serving.launcher).
import trocr_triton_site  # noqa: F401

# isort: split

import json
import logging
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from trocr_client import protocol
from trocr_serving import graph_names as names
from trocr_serving.bls import error_response, infer
from trocr_serving.detokenizer import Detokenizer
from trocr_serving.greedy import greedy_decode
from trocr_serving.pipeline_config import TOKENIZER_FILE, PipelineConfig
from trocr_serving.preprocessing import preprocess
from trocr_serving.requests import InvalidRequestError, parse_request

LOGGER = logging.getLogger(__name__)
ENCODER_MAX_BATCH_PARAMETER = "encoder_max_batch_size"


def _optional_input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        model_dir = Path(args["model_repository"]) / args["model_version"]
        self.config = PipelineConfig.load(model_dir)
        self.detokenizer = Detokenizer(model_dir / TOKENIZER_FILE, self.config.clean_up_tokenization_spaces)
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.encoder_max_batch_size = int(parameters.get(ENCODER_MAX_BATCH_PARAMETER, {}).get("string_value", "8"))

    def execute(self, requests):
        responses = [None] * len(requests)
        jobs = {}
        for index, request in enumerate(requests):
            try:
                jobs[index] = parse_request(
                    pb_utils.get_input_tensor_by_name(request, protocol.INPUT_IMAGE).as_numpy(),
                    _optional_input(request, protocol.INPUT_MAX_NEW_TOKENS),
                    _optional_input(request, protocol.INPUT_NUM_BEAMS),
                    self.config,
                )
            except InvalidRequestError as exc:
                responses[index] = error_response(str(exc), "INVALID_ARG")
        if jobs:
            try:
                self._transcribe(jobs, responses)
            except Exception as exc:
                LOGGER.exception("transcription failed")
                for index in jobs:
                    responses[index] = error_response(f"transcription failed: {exc}", "INTERNAL")
        return responses

    def _transcribe(self, jobs, responses):
        images = [image for job in jobs.values() for image in job.images]
        limits = np.concatenate([job.max_new_tokens for job in jobs.values()])
        pixel_values = preprocess(images, self.config.image)
        chunks = [
            infer(
                "encoder",
                {names.PIXEL_VALUES: pixel_values[start : start + self.encoder_max_batch_size]},
                [names.CROSS_KEY_VALUES],
            )[names.CROSS_KEY_VALUES]
            for start in range(0, len(pixel_values), self.encoder_max_batch_size)
        ]
        hypotheses = greedy_decode(np.concatenate(chunks), limits, self.config, self._decoder_step)
        start = 0
        for index, job in jobs.items():
            rows = hypotheses[start : start + len(job.images)]
            start += len(job.images)
            texts = np.array([self.detokenizer.decode(h.token_ids).encode() for h in rows], dtype=object)
            scores = np.array([h.score for h in rows], dtype=np.float32)
            longest = max(len(h.token_ids) for h in rows)
            token_ids = np.full((len(rows), longest), protocol.TOKEN_IDS_PADDING, dtype=np.int32)
            for row, hypothesis in enumerate(rows):
                token_ids[row, : len(hypothesis.token_ids)] = hypothesis.token_ids
            responses[index] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(protocol.OUTPUT_TEXT, texts),
                    pb_utils.Tensor(protocol.OUTPUT_SCORE, scores),
                    pb_utils.Tensor(protocol.OUTPUT_TOKEN_IDS, token_ids),
                ]
            )

    @staticmethod
    def _decoder_step(inputs):
        outputs = infer("decoder", inputs, [names.LOG_PROBS, names.NEW_KEY_VALUES])
        return outputs[names.LOG_PROBS], outputs[names.NEW_KEY_VALUES]
