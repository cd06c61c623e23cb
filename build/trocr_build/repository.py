"""Write a complete, servable Triton model repository for a TrOCR model."""

from __future__ import annotations

import dataclasses
import json
import logging
import py_compile
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import VisionEncoderDecoderModel
from transformers.utils import logging as transformers_logging

from trocr_build.export import (
    decoder_shape,
    export_decoder,
    export_encoder,
    image_size,
    validate_against_reference,
    validate_pixels,
    write_row_copy,
)
from trocr_build.model_config import DynamicBatching, ModelConfig, QueuePolicy, Tensor
from trocr_build.reference import reference_processor
from trocr_build.trained_models import resolve_model, weights_digest
from trocr_build.variants import PRECISIONS, convert_and_validate
from trocr_client import protocol
from trocr_client.images import sample_paths
from trocr_serving import graph_names as names
from trocr_serving import paths
from trocr_serving import scheduler_protocol as sp
from trocr_serving.engine.core import EngineOptions
from trocr_serving.engine.encoder_runner import TENSORRT_OFF
from trocr_serving.execution import DEVICES, INSTANCE_KINDS
from trocr_serving.front.preprocessing import decode_image, pixels_of
from trocr_serving.pipeline_config import (
    BUILD_INFO_FILE,
    TOKENIZER_FILE,
    GenerationDefaults,
    ImageConfig,
    PipelineConfig,
)
from trocr_serving.triton_adapters.bls_status import STATUS_OUTPUTS

LOGGER = logging.getLogger(__name__)

# The models: the public front and the engine (the same repository runs on the pip server and in NVIDIA's container).
PYTHON_MODELS = (sp.MODEL_NAME, protocol.MODEL_NAME)
# Models of earlier formats (the native encoder and decoder step models), removed by a rebuild.
FORMER_MODELS = ("encoder", "decoder")
# Bump when the repository layout or the graphs change, so that existing repositories are rebuilt.
REPOSITORY_FORMAT = 14


@dataclass(frozen=True)
class ServingOptions:
    """How the repository is served: batch sizes, queue delays, instances and threads."""

    # Images the engine encodes in one call, when rows are free for them: the most that join the running batch
    # at one step (trocr_serving.engine.row_scheduler).
    encoder_max_batch_size: int = 16
    # Front instances (a stub process each) and the requests each holds at once: their product bounds the
    # requests in the scheduler at once. Many per instance only from Triton 2.71 (server_release.CONCURRENT_BLS):
    # on older servers, such as the pip server, each instance holds one whatever the build says.
    trocr_instances: int = 16
    trocr_requests_per_instance: int = 1
    # Triton's queue in front of `trocr` (requests beyond the instances); beyond, UNAVAILABLE at once, refused by
    # Triton itself before any image is decoded. One round of the instances: a queued request starts within
    # about one request's time.
    trocr_max_queue_size: int = 16
    # The deadline of a request that brings no KServe `timeout` parameter, counted from its arrival: past it
    # the request fails with UNAVAILABLE and its decoder rows are freed, so work for a client that left ends.
    default_request_timeout_s: float = 60.0
    max_active_sequences: int = 64  # decoder rows in the running batch (beam search takes num_beams rows)
    # Rows waiting (as their pixels) for free decoder rows; beyond, requests get UNAVAILABLE at once. One
    # running batch's worth: a request admitted to the queue starts within about one generation time.
    max_queued_sequences: int = 64
    # One request's share of the decoder: rows it may hold at once while others wait, and its total work in
    # beam-tokens (images x num_beams x max_new_tokens; beyond: INVALID_ARGUMENT naming the limit).
    max_request_rows: int = 16
    max_request_row_tokens: int = 8192
    max_cache_bytes: int = 2 * 1024**3  # caps max_active_sequences by cross-attention + self-attention cache
    intra_op_threads: int = 0  # 0: one per core
    # Where the encoder and the scheduler's decoder run (the `trocr` front only decodes images: always CPU). For
    # "cuda", one instance of each per GPU in gpu_ids, each on its GPU (model_instance_device_id).
    device: str = "cpu"
    gpu_ids: tuple[int, ...] = (0,)
    # What the graphs compute in (trocr_build.variants.PRECISIONS): fp32, or fp16 for CUDA.
    precision: str = "fp32"
    # On a GPU, the engine's encoder session under ONNX Runtime's TensorRT provider (in the graphs' precision).
    tensorrt: bool = False

    def __post_init__(self):
        if self.tensorrt and self.device != "cuda":
            raise ValueError("tensorrt needs device cuda")
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        PRECISIONS[self.precision].check_device(self.device)
        if self.trocr_instances < 1 or self.trocr_requests_per_instance < 1:
            raise ValueError("trocr_instances and trocr_requests_per_instance must be >= 1")
        if not self.gpu_ids or any(gpu < 0 for gpu in self.gpu_ids):
            raise ValueError(f"gpu_ids {self.gpu_ids} must name GPUs (0, 1, ...)")

    def placement(self) -> dict:
        """ModelConfig fields that put a model on this device."""
        if self.device == "cpu":
            return {"instance_kind": INSTANCE_KINDS["cpu"]}
        return {"instance_kind": INSTANCE_KINDS["cuda"], "gpus": tuple(self.gpu_ids)}


def load_model(model: str, cache_dir: Path | None = None):
    """A Hugging Face id, a local directory, synthetic:small, or random:small / random:tiny -> (model,
    processor, source)."""
    source = resolve_model(model, cache_dir)
    LOGGER.info("loading %s", source)
    transformers_logging.disable_progress_bar()  # transformers 5's "Loading weights" bar (downloads keep theirs)
    hf_model = VisionEncoderDecoderModel.from_pretrained(source).eval().requires_grad_(False)
    processor = reference_processor(source)
    return hf_model, processor, source


def image_config(image_processor, height: int, width: int) -> ImageConfig:
    """The server's preprocessing settings, read from the model's image processor."""
    return ImageConfig(
        height=height,
        width=width,
        resample=int(image_processor.resample),
        rescale_factor=float(image_processor.rescale_factor) if image_processor.do_rescale else 1.0,
        image_mean=tuple(float(v) for v in image_processor.image_mean),
        image_std=tuple(float(v) for v in image_processor.image_std),
    )


def pipeline_config(model: VisionEncoderDecoderModel, processor, source: str) -> PipelineConfig:
    generation = model.generation_config
    max_new_tokens = generation.max_new_tokens or (generation.max_length - 1)
    tokenizer = processor.tokenizer
    shape = decoder_shape(model)
    return PipelineConfig(
        source_model=source,
        image=image_config(processor.image_processor, *image_size(model)),
        decoder=shape,
        generation=GenerationDefaults(
            decoder_start_token_id=int(model.config.decoder_start_token_id),
            eos_token_id=int(generation.eos_token_id),
            pad_token_id=int(generation.pad_token_id),
            max_new_tokens=int(min(max_new_tokens, shape.max_positions - 1)),
            num_beams=int(generation.num_beams or 1),
            length_penalty=float(generation.length_penalty if generation.length_penalty is not None else 1.0),
            early_stopping=generation.early_stopping if generation.early_stopping is not None else False,
            no_repeat_ngram_size=int(generation.no_repeat_ngram_size or 0),
        ),
        clean_up_tokenization_spaces=bool(getattr(tokenizer, "clean_up_tokenization_spaces", False)),
    )


def model_configs(image: ImageConfig, options: ServingOptions, model: str) -> list[ModelConfig]:
    """The models' configs; `model` (the id built from) is a parameter of the public model, so a client can
    tell which weights a server serves."""
    # The Python models are not batched by Triton (model_config: an empty batch crashes Triton 2.51): their
    # tensors carry the batch dimension (-1), and each model bounds its rows itself.
    image_shape = {names.PIXELS: (-1, 3, image.height, image.width)}
    scheduler = ModelConfig(
        name=sp.MODEL_NAME,
        max_batch_size=0,
        inputs=tuple(Tensor.of(spec, image_shape.get(spec.name)) for spec in sp.INPUTS),
        outputs=(
            *(Tensor.of(spec) for spec in sp.OUTPUTS),
            *(Tensor(name, "BYTES", (1,)) for name in STATUS_OUTPUTS),
        ),
        decoupled=True,
        **options.placement(),
        # The engine's options carry the serving options' names; the scheduler runs both graphs itself.
        parameters=EngineOptions(
            graphs=sp.GRAPHS_FOLDER,
            encoder_tensorrt=options.precision if options.tensorrt else TENSORRT_OFF,
            **{f.name: getattr(options, f.name) for f in dataclasses.fields(EngineOptions) if hasattr(options, f.name)},
        ).to_parameters(),
    )
    default_timeout_us = int(options.default_request_timeout_s * 1e6)
    trocr = ModelConfig(
        name=protocol.MODEL_NAME,
        max_batch_size=0,
        inputs=tuple(Tensor.of(spec) for spec in protocol.INPUTS),
        outputs=tuple(Tensor.of(spec) for spec in protocol.OUTPUTS),
        instance_count=options.trocr_instances,
        dynamic_batching=DynamicBatching(
            # One request per execute() (max_batch_size 0): the dynamic batcher is the queue that applies the
            # policy.
            queue_policy=QueuePolicy(
                max_queue_size=options.trocr_max_queue_size,
                default_timeout_us=default_timeout_us,
            ),
        ),
        parameters={
            "default_timeout_us": str(default_timeout_us),
            "requests_per_instance": str(options.trocr_requests_per_instance),
            "model": model,
            "precision": options.precision,
        },
    )
    return [scheduler, trocr]


def _write_model_folders(output: Path) -> None:
    """Each model's folder, made anew (nothing of an earlier build lingers), with its model.py from the
    installed package for the Python models, compiled (the server then writes no bytecode into the repository
    at serve time). The repository holds models only."""
    for model_name in (*PYTHON_MODELS, *FORMER_MODELS):
        shutil.rmtree(output / model_name, ignore_errors=True)
    for model_name in PYTHON_MODELS:
        version = output / model_name / "1"
        version.mkdir(parents=True)
        shutil.copy2(paths.MODEL_FILES_DIR / f"{model_name}.py", version / "model.py")
        py_compile.compile(str(version / "model.py"), doraise=True)


def build_repository(
    model: str,
    output: Path,
    cache_dir: Path | None = None,
    options: ServingOptions | None = None,
    atol: float = 1e-3,
) -> dict:
    """Export `model` into a Triton model repository at `output`; returns the build report."""
    started = time.monotonic()
    options = options or ServingOptions()
    hf_model, processor, source = load_model(model, cache_dir)
    output.mkdir(parents=True, exist_ok=True)
    _write_model_folders(output)
    encoder_path = output / sp.GRAPHS_FOLDER / names.ENCODER_ONNX
    decoder_path = output / sp.GRAPHS_FOLDER / names.DECODER_ONNX
    pipeline = pipeline_config(hf_model, processor, source)
    sample_images = [decode_image(path.read_bytes()) for path in sample_paths()]
    with torch.no_grad():
        report = {
            "pixels": validate_pixels(processor.image_processor, pipeline.image, sample_images),
            "encoder": export_encoder(hf_model, pipeline.image, encoder_path, atol),
            "decoder": export_decoder(hf_model, pipeline.decoder, decoder_path, atol),
            "reference": validate_against_reference(
                hf_model, pipeline.decoder, pipeline.image, encoder_path, decoder_path, atol
            ),
        }
    precision = PRECISIONS[options.precision]
    samples = pixels_of(sample_images, pipeline.image)
    variant = convert_and_validate(precision, encoder_path, decoder_path, pipeline, samples, options.device)
    write_row_copy(decoder_path.parent / names.ROW_COPY_ONNX, precision.cache_type)
    for config in model_configs(pipeline.image, options, model):
        (output / config.name / "config.pbtxt").write_text(config.to_pbtxt())
    trocr_dir = output / protocol.MODEL_NAME / "1"
    for model_name in (protocol.MODEL_NAME, sp.MODEL_NAME):
        pipeline.save(output / model_name / "1")
    processor.tokenizer.backend_tokenizer.save(str(trocr_dir / TOKENIZER_FILE))
    info = {
        "format": REPOSITORY_FORMAT,
        "model": model,
        "source": source,
        "weights_sha256": weights_digest(source),
        "options": dataclasses.asdict(options),
        "max_abs_diff": report,
        "tolerance": atol,
        "variant": variant,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (output / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    LOGGER.info("wrote the model repository for %s to %s", model, output)
    return info


def ensure_repository(
    model: str, repository: Path, rebuild: bool = False, options: ServingOptions | None = None
) -> dict:
    """Build unless `repository` already holds `model` (same source and weights); returns the build info."""
    options = options or ServingOptions()
    info_path = repository / BUILD_INFO_FILE
    source = resolve_model(model)
    wanted = {
        "format": REPOSITORY_FORMAT,
        "source": source,
        "weights_sha256": weights_digest(source),
        "options": json.loads(json.dumps(dataclasses.asdict(options))),  # as build_info.json holds them
    }
    if not rebuild and info_path.exists():
        info = json.loads(info_path.read_text())
        if all(info.get(key) == value for key, value in wanted.items()):
            LOGGER.info("%s already holds %s (use --rebuild to export again)", repository, model)
            return info
    return build_repository(model, repository, options=options)
