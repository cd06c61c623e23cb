"""Triton model configurations as typed Python, written through Triton's own protobuf (never hand-edited)."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from trocr_client.protocol import TensorSpec
from trocr_serving.execution import INSTANCE_KINDS

DATA_TYPES = {
    "BOOL": pb.TYPE_BOOL,
    "UINT8": pb.TYPE_UINT8,
    "INT32": pb.TYPE_INT32,
    "INT64": pb.TYPE_INT64,
    "FP16": pb.TYPE_FP16,
    "FP32": pb.TYPE_FP32,
    "BYTES": pb.TYPE_STRING,
}


class ModelConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # a key of DATA_TYPES
    dims: tuple[int, ...]  # without the batch dimension; -1 is variable
    optional: bool = False
    reshape: tuple[int, ...] | None = None  # shape the model sees (e.g. () for one scalar per batch row)

    @classmethod
    def of(cls, spec: TensorSpec, dims: tuple[int, ...] | None = None) -> Tensor:
        """A tensor of a model's contract (`dims`: where the spec leaves a dimension to the model); a per-image
        tensor, sent as [images, 1], is read by the model as [images]."""
        reshape = (-1,) if spec.per_image else None
        return cls(spec.name, spec.datatype, dims or spec.shape, optional=spec.optional, reshape=reshape)

    def validate(self, where: str) -> None:
        if not self.name:
            raise ModelConfigError(f"{where}: tensor name is empty")
        if self.data_type not in DATA_TYPES:
            raise ModelConfigError(
                f"{where}.{self.name}: data_type {self.data_type!r} is not one of {', '.join(DATA_TYPES)}"
            )
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise ModelConfigError(f"{where}.{self.name}: dims {self.dims} must be non-empty, positive or -1")


@dataclass(frozen=True)
class QueuePolicy:
    """Triton's bound on the queue in front of a model: beyond `max_queue_size` requests, or past a request's
    timeout while queued, requests are refused at once with UNAVAILABLE (timeout_action REJECT)."""

    max_queue_size: int
    default_timeout_us: int = 0  # for requests without the KServe `timeout` parameter; 0: none
    allow_timeout_override: bool = True


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic batcher; on a model with max_batch_size 0 it batches nothing and serves as the queue that
    applies `queue_policy`."""

    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    queue_policy: QueuePolicy | None = None


# Triton's backends this project writes configs for, and the platform string each native one needs.
PLATFORMS = {"python": "", "onnxruntime": "onnxruntime_onnx"}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    backend: str = "python"  # a key of PLATFORMS
    instance_count: int = 1  # per GPU for KIND_GPU, as Triton counts
    instance_kind: str = "KIND_CPU"  # or KIND_GPU (execution.INSTANCE_KINDS)
    gpus: tuple[int, ...] = ()  # for KIND_GPU: the GPUs that get `instance_count` instances each
    dynamic_batching: DynamicBatching | None = None
    decoupled: bool = False
    parameters: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.name:
            raise ModelConfigError("model name is empty")
        if self.max_batch_size < 0:
            raise ModelConfigError(f"{self.name}: max_batch_size must be >= 0, got {self.max_batch_size}")
        if self.backend not in PLATFORMS:
            raise ModelConfigError(f"{self.name}: backend {self.backend!r} is not one of {', '.join(PLATFORMS)}")
        if self.instance_count < 1:
            raise ModelConfigError(f"{self.name}: instance_count must be >= 1, got {self.instance_count}")
        kinds = tuple(INSTANCE_KINDS.values())
        if self.instance_kind not in kinds:
            raise ModelConfigError(f"{self.name}: instance_kind {self.instance_kind!r} is not one of {kinds}")
        if (self.instance_kind == "KIND_GPU") != bool(self.gpus) or any(gpu < 0 for gpu in self.gpus):
            raise ModelConfigError(f"{self.name}: KIND_GPU needs GPU ids (>= 0), KIND_CPU none; got {self.gpus}")
        if self.backend == "python" and self.max_batch_size > 0:
            # WAR(2.51): python_backend (r24.10, python_be.cc CheckIncomingRequests/ProcessRequests) returns
            # from an execute whose rows add up to 0 without answering its requests, and tritonserver dies
            # (SIGSEGV): one request of shape [0, ...] from any client. Unbatched (max_batch_size 0), each
            # request counts 1, so the model sees the empty request and refuses it. The batch dimension is then
            # an explicit -1 in dims, and row limits are the model's to check.
            # Fixed in: not fixed in r26.07's source (the early return is still there).
            raise ModelConfigError(
                f"{self.name}: a Python-backend model must not be batched by Triton (max_batch_size 0): an "
                "empty batch crashes Triton 2.51"
            )
        if self.dynamic_batching and self.max_batch_size == 0 and self.dynamic_batching.preferred_batch_sizes:
            raise ModelConfigError(f"{self.name}: preferred_batch_sizes need max_batch_size > 0")
        if self.dynamic_batching and any(
            not 0 < size <= self.max_batch_size for size in self.dynamic_batching.preferred_batch_sizes
        ):
            raise ModelConfigError(f"{self.name}: preferred_batch_sizes must lie in 1..max_batch_size")
        queue = self.dynamic_batching.queue_policy if self.dynamic_batching else None
        if queue is not None and (queue.max_queue_size < 1 or queue.default_timeout_us < 0):
            raise ModelConfigError(f"{self.name}: queue_policy needs max_queue_size >= 1 and default_timeout_us >= 0")
        if not self.inputs or not self.outputs:
            raise ModelConfigError(f"{self.name}: a model needs at least one input and one output")
        seen: set[str] = set()
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for tensor in tensors:
                tensor.validate(f"{self.name}.{kind}")
                if tensor.name in seen:
                    raise ModelConfigError(f"{self.name}: tensor name {tensor.name!r} is used twice")
                seen.add(tensor.name)
        for key, value in self.parameters.items():
            if not isinstance(value, str):
                raise ModelConfigError(f"{self.name}: parameter {key!r} must be a string, got {type(value).__name__}")

    def to_protobuf(self) -> pb.ModelConfig:
        self.validate()
        config = pb.ModelConfig(
            name=self.name,
            backend=self.backend,
            platform=PLATFORMS[self.backend],
            max_batch_size=self.max_batch_size,
        )
        for tensors, target in ((self.inputs, config.input), (self.outputs, config.output)):
            for tensor in tensors:
                entry = target.add(name=tensor.name, data_type=DATA_TYPES[tensor.data_type], dims=list(tensor.dims))
                if tensor.optional:
                    entry.optional = True
                if tensor.reshape is not None:
                    entry.reshape.shape.extend(tensor.reshape)
        group = config.instance_group.add(
            count=self.instance_count, kind=pb.ModelInstanceGroup.Kind.Value(self.instance_kind)
        )
        group.gpus.extend(self.gpus)
        if self.dynamic_batching is not None:
            config.dynamic_batching.max_queue_delay_microseconds = self.dynamic_batching.max_queue_delay_us
            config.dynamic_batching.preferred_batch_size.extend(self.dynamic_batching.preferred_batch_sizes)
            queue = self.dynamic_batching.queue_policy
            if queue is not None:
                policy = config.dynamic_batching.default_queue_policy
                policy.max_queue_size = queue.max_queue_size
                policy.timeout_action = pb.ModelQueuePolicy.REJECT
                policy.default_timeout_microseconds = queue.default_timeout_us
                policy.allow_timeout_override = queue.allow_timeout_override
        if self.decoupled:
            config.model_transaction_policy.decoupled = True
        for key, value in sorted(self.parameters.items()):
            config.parameters[key].string_value = value
        return config

    def to_pbtxt(self) -> str:
        return text_format.MessageToString(self.to_protobuf())
