"""The repository a build writes: Python models only, the engine's three graphs in the scheduler's folder, and
the engine's options (TensorRT for its encoder on a GPU) as the scheduler reads them back."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from trocr_build.repository import ServingOptions, build_repository, model_configs
from trocr_serving import graph_names as names
from trocr_serving.engine.core import EngineOptions
from trocr_serving.execution import TENSORRT_CACHE_DIR, Execution
from trocr_serving.launcher.server import ServerError, check_repository, model_configs_of
from trocr_serving.pipeline_config import PipelineConfig


def test_the_repository_is_python_models_only_with_the_engines_graphs_in_the_scheduler(built_tiny):
    configs = model_configs_of(built_tiny.repository)
    assert sorted(configs) == ["scheduler", "trocr"]  # no model passes cross-attention keys/values to another
    assert (
        EngineOptions.from_parameters(
            {key: value.string_value for key, value in configs["scheduler"].parameters.items()}
        ).graphs
        == "scheduler/1"
    )
    graphs = built_tiny.repository / "scheduler" / "1"
    assert {path.name for path in graphs.glob("*.onnx")} == {
        names.ENCODER_ONNX,
        names.DECODER_ONNX,
        names.ROW_COPY_ONNX,
    }
    assert configs["scheduler"].input[0].data_type == pb.TYPE_UINT8  # the scheduler's pixel input
    for name, config in configs.items():
        assert (config.backend, config.platform) == ("python", "")
        assert (built_tiny.repository / name / "1" / "model.py").is_file()


def test_a_rebuild_removes_the_native_models_of_earlier_formats(built_tiny, tmp_path, tmp_path_factory):
    repository = tmp_path / "repository"
    for former in ("encoder", "decoder"):
        (repository / former / "1").mkdir(parents=True)
        (repository / former / "config.pbtxt").write_text(f'name: "{former}"\nbackend: "onnxruntime"\n')
    build_repository("random:tiny", repository, cache_dir=tmp_path_factory.getbasetemp() / "models")
    assert sorted(model_configs_of(repository)) == ["scheduler", "trocr"]


def test_tensorrt_is_an_option_of_the_engines_encoder_on_a_gpu(built_tiny):
    options = ServingOptions(device="cuda", precision="fp16", tensorrt=True)
    image = PipelineConfig.load(built_tiny.repository / "scheduler" / "1").image
    (scheduler,) = [c for c in model_configs(image, options, "m") if c.name == "scheduler"]
    assert EngineOptions.from_parameters(scheduler.parameters).encoder_tensorrt == "fp16"
    providers = Execution("cuda", 1).tensorrt_providers(True, names.PIXELS, ((1, 3, 8, 8), (8, 3, 8, 8), (16, 3, 8, 8)))
    (tensorrt, tensorrt_options), (cuda, cuda_options) = providers
    assert (tensorrt, cuda) == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert tensorrt_options["device_id"] == cuda_options["device_id"] == "1"
    assert tensorrt_options["trt_fp16_enable"] == "True"
    assert tensorrt_options["trt_engine_cache_path"] == TENSORRT_CACHE_DIR
    assert tensorrt_options["trt_profile_max_shapes"] == "pixels:16x3x8x8"


@pytest.mark.parametrize("options", [{"tensorrt": True}, {"tensorrt": True, "device": "cpu"}])
def test_tensorrt_needs_cuda(options):
    with pytest.raises(ValueError, match="tensorrt needs device cuda"):
        ServingOptions(**options)


def test_engine_options_refuse_an_unknown_tensorrt_precision(built_tiny):
    parameters = {
        key: value.string_value
        for key, value in model_configs_of(built_tiny.repository)["scheduler"].parameters.items()
    }
    with pytest.raises(ValueError, match="encoder_tensorrt 'int8' is not one of off, fp32, fp16"):
        EngineOptions.from_parameters({**parameters, "encoder_tensorrt": "int8"})


def test_a_server_without_a_models_backend_refuses_the_repository_by_name(built_tiny, tmp_path):
    repository = tmp_path / "repository"
    (repository / "native" / "1").mkdir(parents=True)
    (repository / "native" / "config.pbtxt").write_text('name: "native"\nbackend: "onnxruntime"\n')
    backends = tmp_path / "backends"
    (backends / "python").mkdir(parents=True)  # the pip server's backends
    with pytest.raises(ServerError, match="native need the onnxruntime backend, which .* lacks"):
        check_repository(repository, backends)
