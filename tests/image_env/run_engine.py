"""Run inside the CPU image's Python environment (tests/integration/test_image_packages.py): the engine of a
built repository, in-process, on the sample images; prints the versions it ran with and the tokens as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy
import onnxruntime

from trocr_client.images import sample_paths
from trocr_serving import scheduler_protocol as sp
from trocr_serving.engine.core import Engine, EngineOptions
from trocr_serving.engine.decode_loop import Ticket
from trocr_serving.front.preprocessing import decode_image, pixels_of
from trocr_serving.launcher.server import model_configs_of
from trocr_serving.pipeline_config import PipelineConfig


async def transcribe(repository: Path, max_new_tokens: int, num_beams: int) -> list[list[int]]:
    config = model_configs_of(repository)["scheduler"]
    options = EngineOptions.from_parameters({key: value.string_value for key, value in config.parameters.items()})
    pipeline = PipelineConfig.load(repository / "scheduler" / "1")
    images = [path.read_bytes() for path in sample_paths()]
    pixels = pixels_of([decode_image(data) for data in images], pipeline.image)
    rows = len(images)
    engine = Engine(options, pipeline, repository)
    try:
        arrays = sp.request_arrays(pixels, [max_new_tokens] * rows, [num_beams] * rows, [False] * rows)
        results = await engine.transcribe(arrays, Ticket())
    finally:
        engine.close()
    return [list(result.token_ids) for result in results]


if __name__ == "__main__":
    repository, max_new_tokens, num_beams = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    tokens = asyncio.run(transcribe(repository, max_new_tokens, num_beams))
    versions = {
        "python": list(sys.version_info[:2]),
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    print(json.dumps({"versions": versions, "tokens": tokens}))
