"""Triton model `trocr`: the public entry point, callable with a plain unary ModelInfer.

Each instance validates and decodes the images of a request, preprocesses them exactly as the model's
image processor does, and forwards them over BLS to the decoupled `scheduler`, which batches the decoder
steps of all requests together; then it detokenizes. Several instances run side by side (Triton runs one
execute() per instance at a time, even an async one), so concurrent requests meet in the scheduler. A request with a bad
image or parameter gets its own INVALID_ARG error.
"""

# First: puts the project environment on the path (see trocr_serving.launcher).
import trocr_triton_site  # noqa: F401

# isort: split

import logging
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from trocr_client import protocol
from trocr_serving import scheduler_protocol as sp
from trocr_serving.bls import ModelCallError, error_response, infer_decoupled_async
from trocr_serving.detokenizer import Detokenizer
from trocr_serving.pipeline_config import TOKENIZER_FILE, PipelineConfig
from trocr_serving.preprocessing import preprocess
from trocr_serving.requests import InvalidRequestError, parse_request

LOGGER = logging.getLogger(__name__)


def _optional_input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        model_dir = Path(args["model_repository"]) / args["model_version"]
        self.config = PipelineConfig.load(model_dir)
        self.detokenizer = Detokenizer(model_dir / TOKENIZER_FILE, self.config.clean_up_tokenization_spaces)

    def finalize(self):
        del self.detokenizer

    async def execute(self, requests):
        return [await self._serve(request) for request in requests]

    async def _serve(self, request):
        try:
            job = parse_request(
                pb_utils.get_input_tensor_by_name(request, protocol.INPUT_IMAGE).as_numpy(),
                _optional_input(request, protocol.INPUT_MAX_NEW_TOKENS),
                _optional_input(request, protocol.INPUT_NUM_BEAMS),
                self.config,
                _optional_input(request, protocol.INPUT_IGNORE_EOS),
            )
            inputs = sp.request_arrays(
                preprocess(job.images, self.config.image), job.max_new_tokens, job.num_beams, job.ignore_eos
            )
            outputs = await infer_decoupled_async(sp.MODEL_NAME, inputs, list(sp.OUTPUTS), timeout_us=request.timeout())
        except InvalidRequestError as exc:
            return error_response(str(exc), "INVALID_ARG")
        except ModelCallError as exc:
            return exc.response()
        except Exception as exc:
            LOGGER.exception("transcription failed")
            return error_response(f"transcription failed: {exc}", "INTERNAL")
        token_ids = outputs[sp.TOKEN_IDS]
        texts = [
            self.detokenizer.decode([int(t) for t in row if t != protocol.TOKEN_IDS_PADDING]).encode()
            for row in token_ids
        ]
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(protocol.OUTPUT_TEXT, np.array(texts, dtype=object)),
                pb_utils.Tensor(protocol.OUTPUT_SCORE, outputs[sp.SCORE]),
                pb_utils.Tensor(protocol.OUTPUT_TOKEN_IDS, token_ids),
            ]
        )
