import math

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from trocr_build.model_config import DATA_TYPES, DynamicBatching, ModelConfig, ModelConfigError, QueuePolicy, Tensor
from trocr_build.repository import ServingOptions, model_configs
from trocr_client import protocol
from trocr_client.aio import EXPECTED_INPUTS
from trocr_serving import scheduler_protocol as sp
from trocr_serving.engine.core import EngineOptions
from trocr_serving.execution import Execution
from trocr_serving.launcher.server import INSTANCE_UNLOAD_S, instance_count, model_configs_of, unload_allowance_s
from trocr_serving.pipeline_config import ImageConfig


def config(**overrides) -> ModelConfig:
    fields = {
        "name": "m",
        "max_batch_size": 0,
        "inputs": (Tensor("x", "FP32", (3, -1)),),
        "outputs": (Tensor("y", "INT64", (1,)),),
    }
    return ModelConfig(**{**fields, **overrides})


def parsed(model: ModelConfig) -> pb.ModelConfig:
    return text_format.Parse(model.to_pbtxt(), pb.ModelConfig())


def test_name_and_backend():
    message = parsed(config())
    assert (message.name, message.backend) == ("m", "python")


BATCHED = {"backend": "onnxruntime", "max_batch_size": 8}  # Triton batches native models only


def test_max_batch_size():
    assert parsed(config(**{**BATCHED, "max_batch_size": 32})).max_batch_size == 32


def test_input_data_type_and_dims():
    (tensor,) = parsed(config()).input
    assert (tensor.name, tensor.data_type, list(tensor.dims)) == ("x", pb.TYPE_FP32, [3, -1])


def test_bytes_maps_to_type_string():
    message = parsed(config(outputs=(Tensor("text", "BYTES", (1,)),)))
    assert message.output[0].data_type == pb.TYPE_STRING


def test_optional_input():
    message = parsed(config(inputs=(Tensor("x", "FP32", (1,)), Tensor("o", "INT32", (1,), optional=True))))
    assert [t.optional for t in message.input] == [False, True]


def test_reshape_to_scalar():
    message = parsed(config(inputs=(Tensor("x", "BYTES", (1,), reshape=()),)))
    assert message.input[0].HasField("reshape") and list(message.input[0].reshape.shape) == []


def test_dynamic_batching_queue_delay():
    message = parsed(config(**BATCHED, dynamic_batching=DynamicBatching(max_queue_delay_us=500)))
    assert message.dynamic_batching.max_queue_delay_microseconds == 500


def test_no_dynamic_batching_by_default():
    assert not parsed(config()).HasField("dynamic_batching")


def test_instance_count_on_cpu():
    (group,) = parsed(config(instance_count=3)).instance_group
    assert (group.count, group.kind) == (3, pb.ModelInstanceGroup.KIND_CPU)


def test_decoupled_policy():
    assert parsed(config(decoupled=True)).model_transaction_policy.decoupled


def test_parameters():
    assert parsed(config(parameters={"onnx_file": "a.onnx"})).parameters["onnx_file"].string_value == "a.onnx"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "model name is empty"),
        ({"max_batch_size": -1}, "max_batch_size must be >= 0"),
        ({"instance_count": 0}, "instance_count must be >= 1"),
        ({"max_batch_size": 8}, "a Python-backend model must not be batched by Triton"),
        ({"dynamic_batching": DynamicBatching(preferred_batch_sizes=(1,))}, "preferred_batch_sizes need max_batch"),
        ({**BATCHED, "dynamic_batching": DynamicBatching(preferred_batch_sizes=(16,))}, "must lie in 1..max_batch"),
        ({"inputs": (Tensor("x", "FP128", (1,)),)}, r"m.input.x: data_type 'FP128'"),
        ({"inputs": (Tensor("x", "FP32", ()),)}, r"m.input.x: dims \(\) must be non-empty"),
        ({"inputs": (Tensor("x", "FP32", (0,)),)}, "must be non-empty, positive or -1"),
        ({"outputs": (Tensor("x", "FP32", (1,)),)}, "tensor name 'x' is used twice"),
        ({"outputs": ()}, "at least one input and one output"),
        ({"parameters": {"threads": 2}}, "parameter 'threads' must be a string"),
    ],
)
def test_invalid_fields_are_named(overrides, message):
    with pytest.raises(ModelConfigError, match=message):
        config(**overrides).to_pbtxt()


def image(height: int, width: int) -> ImageConfig:
    return ImageConfig(height, width, 2, 1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_repository_configs_match_the_graph_dimensions():
    scheduler, trocr = (parsed(c) for c in model_configs(image(384, 384), ServingOptions(), "random:tiny"))
    # no `encoder` nor `decoder` model: the scheduler's engine runs both graphs itself
    assert scheduler.parameters["graphs"].string_value == "scheduler/1"
    assert scheduler.parameters["encoder_tensorrt"].string_value == "off"
    assert scheduler.parameters["encoder_max_batch_size"].string_value == str(ServingOptions().encoder_max_batch_size)
    assert scheduler.input[0].data_type == pb.TYPE_UINT8
    assert [t.name for t in trocr.input] == ["image", "max_new_tokens", "num_beams", "ignore_eos"]
    # Callers send [images, 1]; the model sees [images]; Triton batches none of them (an empty batch crashes 2.51).
    assert [(list(t.dims), list(t.reshape.shape)) for t in trocr.input] == [([-1, 1], [-1])] * 4
    assert (scheduler.max_batch_size, trocr.max_batch_size) == (0, 0)
    assert scheduler.model_transaction_policy.decoupled and list(scheduler.input[0].dims) == [-1, 3, 384, 384]
    assert [t.name for t in trocr.output] == ["text", "score", "token_ids", "error_code", "error"]
    assert trocr.parameters["model"].string_value == "random:tiny"  # which weights a server serves


def test_queue_policy_rejects_beyond_its_size_and_after_its_timeout():
    queue = QueuePolicy(max_queue_size=16, default_timeout_us=60_000_000)
    policy = parsed(config(dynamic_batching=DynamicBatching(queue_policy=queue))).dynamic_batching.default_queue_policy
    assert policy.max_queue_size == 16
    assert policy.timeout_action == pb.ModelQueuePolicy.REJECT
    assert policy.default_timeout_microseconds == 60_000_000
    assert policy.allow_timeout_override


def test_queue_policy_needs_room():
    with pytest.raises(ModelConfigError, match="max_queue_size >= 1"):
        config(dynamic_batching=DynamicBatching(queue_policy=QueuePolicy(max_queue_size=0))).to_protobuf()


def test_public_model_is_behind_a_bounded_queue_sized_by_the_options():
    options = ServingOptions(trocr_instances=3, trocr_max_queue_size=5, default_request_timeout_s=2.5)
    trocr = parsed(model_configs(image(64, 64), options, "random:tiny")[-1])
    assert trocr.instance_group[0].count == 3
    assert list(trocr.dynamic_batching.preferred_batch_size) == []  # the batcher is only the queue
    assert trocr.dynamic_batching.default_queue_policy.max_queue_size == 5
    assert trocr.dynamic_batching.default_queue_policy.default_timeout_microseconds == 2_500_000
    assert trocr.parameters["default_timeout_us"].string_value == "2500000"


def test_engine_options_are_written_and_parsed_by_one_dataclass():
    options = EngineOptions("scheduler/1", 16, 64, 64, 16, 8192, 2**31, 0, "off")
    assert EngineOptions.from_parameters(options.to_parameters()) == options
    with pytest.raises(ValueError, match="'max_request_rows' is missing"):
        EngineOptions.from_parameters({k: v for k, v in options.to_parameters().items() if k != "max_request_rows"})
    with pytest.raises(ValueError, match="max_cache_bytes='2 GiB' is not an integer"):
        EngineOptions.from_parameters(options.to_parameters() | {"max_cache_bytes": "2 GiB"})


def test_gpu_instances_name_their_gpus():
    gpu = ModelConfig("m", 0, (Tensor("x", "FP32", (1,)),), (Tensor("y", "FP32", (1,)),), "python", 1, "KIND_GPU", (1,))
    (group,) = parsed(gpu).instance_group
    assert group.kind == pb.ModelInstanceGroup.KIND_GPU and list(group.gpus) == [1]
    with pytest.raises(ModelConfigError, match="KIND_GPU needs GPU ids"):
        ModelConfig("m", 0, gpu.inputs, gpu.outputs, instance_kind="KIND_GPU").validate()
    with pytest.raises(ModelConfigError, match="instance_kind 'KIND_TPU'"):
        ModelConfig("m", 0, gpu.inputs, gpu.outputs, instance_kind="KIND_TPU").validate()


def test_serving_options_check_the_device():
    assert ServingOptions(device="cuda", gpu_ids=(0, 2)).placement() == {"instance_kind": "KIND_GPU", "gpus": (0, 2)}
    with pytest.raises(ValueError, match="device 'tpu'"):
        ServingOptions(device="tpu")


def test_cuda_sessions_get_the_providers_of_their_instance():
    execution = Execution.of_instance({"model_instance_kind": "GPU", "model_instance_device_id": "3"})
    ((name, options),) = execution.providers()
    assert name == "CUDAExecutionProvider" and options["device_id"] == "3"
    assert Execution.of_instance({"model_instance_kind": "CPU"}).providers() == ["CPUExecutionProvider"]


def test_both_models_configs_are_generated_from_their_contracts_specs():
    """trocr's and the scheduler's tensors are declared once (trocr_client.protocol, scheduler_protocol) and the
    configs, the client's contract check and the models' arrays all read those declarations."""
    scheduler, trocr = (parsed(c) for c in model_configs(image(384, 384), ServingOptions(), "random:tiny"))
    for config, inputs, outputs in ((trocr, protocol.INPUTS, protocol.OUTPUTS), (scheduler, sp.INPUTS, sp.OUTPUTS)):
        declared = [(t.name, t.data_type, t.optional) for t in config.input]
        assert declared == [(s.name, DATA_TYPES[s.datatype], s.optional) for s in inputs]
        assert [t.name for t in config.output][: len(outputs)] == [s.name for s in outputs]
        for tensor, spec in zip([*config.input, *config.output], [*inputs, *outputs]):
            assert list(tensor.reshape.shape) == ([-1] if spec.per_image else []), tensor.name
    assert {s.name: s.datatype for s in protocol.INPUTS} == EXPECTED_INPUTS
    assert list(scheduler.input[0].dims) == [-1, 3, 384, 384]  # the model's image size where the spec leaves it


def test_the_launcher_counts_the_instances_it_waits_for_while_triton_unloads(tmp_path):
    """Triton's Python backend unloads instances one after another (about a second each): the launcher's stop
    waits for as many as the configs ask, a KIND_GPU group's count once per GPU."""
    options = ServingOptions(device="cuda", gpu_ids=(0, 1), trocr_instances=3)
    for config in model_configs(image(64, 64), options, "random:tiny"):
        (tmp_path / config.name).mkdir()
        (tmp_path / config.name / "config.pbtxt").write_text(config.to_pbtxt())
    assert instance_count(model_configs_of(tmp_path)) == 2 + 3  # a scheduler per GPU, the front's on the CPU
    assert unload_allowance_s(5) == math.ceil(INSTANCE_UNLOAD_S * 5)
