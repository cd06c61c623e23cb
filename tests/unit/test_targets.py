"""Both repository targets, built from a real export: every config parsed with Triton's schema; the native
models' configs checked against what the pip target declares from the model's dimensions, the graphs' names, and
ONNX Runtime's reading of the graphs they name."""

from __future__ import annotations

import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from trocr_build.export import Dimensions
from trocr_build.repository import ServingOptions, build_repository
from trocr_build.targets import native_models
from trocr_serving import graph_names as names
from trocr_serving.launcher import ServerError, ServerInstall, check_repository, model_configs_of

ORT_TYPES = {
    "tensor(float)": pb.TYPE_FP32,
    "tensor(float16)": pb.TYPE_FP16,
    "tensor(int64)": pb.TYPE_INT64,
    "tensor(uint8)": pb.TYPE_UINT8,
}


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    repository = tmp_path_factory.mktemp("container")
    options = ServingOptions(target="triton-container", encoder_max_batch_size=8, intra_op_threads=2)
    build_repository("random:tiny", repository, cache_dir=tmp_path_factory.getbasetemp() / "models", options=options)
    return repository


def assert_matches_graph(config: pb.ModelConfig, session: ort.InferenceSession) -> None:
    batched = config.max_batch_size > 0
    for declared, actual in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        assert [t.name for t in declared] == [t.name for t in actual]
        for tensor, graph in zip(declared, actual):
            assert tensor.data_type == ORT_TYPES[graph.type], tensor.name
            dims = [d if isinstance(d, int) else -1 for d in graph.shape]
            assert list(tensor.dims) == (dims[1:] if batched else dims), tensor.name


def test_container_target_has_native_encoder_and_decoder(container):
    configs = model_configs_of(container)
    assert sorted(configs) == ["decoder", "encoder", "scheduler", "trocr"]
    for name in ("encoder", "decoder"):
        config = configs[name]
        assert (config.platform, config.backend) == ("onnxruntime_onnx", "onnxruntime")
        graph = container / name / "1" / config.default_model_filename
        assert graph.is_file() and not (container / name / "1" / "model.py").exists()
        assert_matches_graph(config, ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]))
        assert config.parameters["intra_op_thread_count"].string_value == "2"
    encoder = configs["encoder"]
    assert encoder.max_batch_size == 8 and list(encoder.dynamic_batching.preferred_batch_size) == [4, 8]
    assert configs["decoder"].max_batch_size == 0  # its cache rows and top_k do not batch
    for name in ("scheduler", "trocr"):
        assert configs[name].backend == "python" and (container / name / "1" / "model.py").is_file()


def test_native_configs_agree_with_the_model_and_the_graph_names(container, built_tiny):
    """The scheduler's pixels (declared from the model's dimensions) are what the native encoder takes."""
    native = model_configs_of(container)
    dims = Dimensions.of(built_tiny.model)
    scheduler_pixels = model_configs_of(built_tiny.repository)["scheduler"].input[0]
    ((encoder_pixels,), (cross,)) = native["encoder"].input, native["encoder"].output
    assert (encoder_pixels.name, encoder_pixels.data_type) == (scheduler_pixels.name, scheduler_pixels.data_type)
    assert list(encoder_pixels.dims) == list(scheduler_pixels.dims)[1:] == [3, *dims.image_size]
    assert cross.name == names.CROSS_KEY_VALUES
    assert list(cross.dims) == [dims.num_layers, 2, dims.num_heads, dims.encoder_seq_len, dims.head_dim]
    layers = dims.num_layers
    decoder = native["decoder"]
    assert [t.name for t in decoder.input] == [*names.DECODER_STEP_INPUTS, *names.cross_inputs(layers), names.TOP_K]
    assert [t.name for t in decoder.output] == list(names.DECODER_OUTPUTS)


def test_container_scheduler_runs_the_native_models_graphs(container):
    """The engine opens both graphs itself (nothing of an image crosses between models); the native models
    serve callers that run their own loop, from the same files (no copy)."""
    parameters = model_configs_of(container)["scheduler"].parameters
    assert parameters["decoder_onnx"].string_value == "decoder/1/decoder.onnx"
    assert parameters["encoder_onnx"].string_value == "encoder/1/encoder.onnx"
    assert (container / "decoder" / "1" / "decoder.onnx").is_file()
    assert (container / "decoder" / "1" / "row_copy.onnx").is_file() and (container / "encoder" / "1").is_dir()
    assert not list((container / "scheduler" / "1").glob("*.onnx"))


def test_pip_target_is_python_models_only_with_both_graphs_in_the_engine(built_tiny):
    configs = model_configs_of(built_tiny.repository)
    assert sorted(configs) == ["scheduler", "trocr"]  # no model passes cross-attention keys/values to another
    parameters = configs["scheduler"].parameters
    assert parameters["encoder_onnx"].string_value == "scheduler/1/encoder.onnx"
    assert parameters["decoder_onnx"].string_value == "scheduler/1/decoder.onnx"
    assert configs["scheduler"].input[0].data_type == pb.TYPE_UINT8  # the scheduler's pixel input
    for name, config in configs.items():
        assert (config.backend, config.platform) == ("python", "")
        assert (built_tiny.repository / name / "1" / "model.py").is_file()


def test_a_rebuild_for_the_other_target_leaves_nothing_of_the_first(container, tmp_path):
    repository = tmp_path / "repository"
    build_repository("random:tiny", repository, options=ServingOptions(target="triton-container"))
    build_repository("random:tiny", repository, options=ServingOptions(target="pip"))
    assert sorted(model_configs_of(repository)) == ["scheduler", "trocr"]
    assert not (repository / "decoder").exists() and not (repository / "encoder").exists()


def test_tensorrt_settings_on_a_gpu(container):
    placement = ServingOptions(device="cuda", gpu_ids=(1,)).placement()
    graphs = (container / "encoder" / "1" / "encoder.onnx", container / "decoder" / "1" / "decoder.onnx")
    encoder, decoder = (
        text_format.Parse(c.to_pbtxt(), pb.ModelConfig()) for c in native_models(*graphs, 16, 0, placement, "FP16")
    )
    (accelerator,) = encoder.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert accelerator.parameters["trt_engine_cache_enable"] == "1"
    assert (
        list(encoder.instance_group[0].gpus) == [1] and encoder.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    )
    assert not decoder.optimization.execution_accelerators.gpu_execution_accelerator  # the decoder stays on CUDA


@pytest.mark.parametrize(
    "options",
    [{"tensorrt": True, "target": "triton-container"}, {"tensorrt": True, "device": "cuda"}, {"target": "docker"}],
)
def test_target_options_are_checked(options):
    with pytest.raises(ValueError, match="tensorrt needs|target 'docker'"):
        ServingOptions(**options)


def test_a_server_without_the_onnxruntime_backend_refuses_a_container_repository_by_name(container, tmp_path):
    backends = tmp_path / "backends"
    (backends / "python").mkdir(parents=True)  # the pip server's backends
    with pytest.raises(ServerError, match="decoder, encoder need the onnxruntime backend, which .* lacks"):
        check_repository(container, backends)
    (backends / "onnxruntime").mkdir()  # NVIDIA's container has it
    check_repository(container, backends)


def test_a_stock_server_runs_with_its_own_backends(tmp_path):
    binary = tmp_path / "opt" / "tritonserver" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    binary.touch()
    with pytest.raises(ServerError, match="has no python backend: pass the server's backend directory"):
        ServerInstall(binary).backend_directory(tmp_path / "work")
    (tmp_path / "opt" / "tritonserver" / "backends" / "python").mkdir(parents=True)
    install = ServerInstall(binary)
    assert install.backend_directory(tmp_path / "work") == tmp_path / "opt" / "tritonserver" / "backends"
    assert install.server_binary() == binary and install.library_path() == []  # nothing of pip's server
