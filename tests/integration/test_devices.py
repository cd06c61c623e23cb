"""A CUDA build on this GPU-less machine: a valid repository (configs read back through Triton's protobuf),
and a server that refuses to start, at once, with a message that names the missing GPU."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from trocr_build.repository import ServingOptions, build_repository
from trocr_serving.execution import visible_gpus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cuda_repository(tmp_path_factory):
    repository = tmp_path_factory.mktemp("cuda")
    options = ServingOptions(device="cuda", gpu_ids=(0, 1))
    build_repository("random:tiny", repository, cache_dir=tmp_path_factory.getbasetemp() / "models", options=options)
    return repository


def config(repository, name: str) -> pb.ModelConfig:
    return text_format.Parse((repository / name / "config.pbtxt").read_text(), pb.ModelConfig())


def test_a_cuda_build_places_the_graphs_on_the_gpus_and_the_front_on_the_cpu(cuda_repository):
    (group,) = config(cuda_repository, "scheduler").instance_group  # its engine runs both graphs
    assert group.kind == pb.ModelInstanceGroup.KIND_GPU and list(group.gpus) == [0, 1] and group.count == 1
    (front,) = config(cuda_repository, "trocr").instance_group
    assert front.kind == pb.ModelInstanceGroup.KIND_CPU and not front.gpus


@pytest.mark.skipif(visible_gpus() > 0, reason="the refusal it checks happens only on a machine without a GPU")
def test_serving_a_cuda_build_without_a_gpu_fails_at_once_naming_it(cuda_repository):
    done = subprocess.run(
        [sys.executable, "-m", "trocr_serving.launcher.cli", "--model-repository", str(cuda_repository)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "built for CUDA (GPUs [0, 1]), but this machine has no NVIDIA GPU" in output
    assert "trocr-build --device cpu" in output and "Traceback" not in output  # at once: before any model loads
