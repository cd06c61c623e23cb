"""The images' Dockerfile, checked without a Docker engine (none runs here): its stages, and every project command
it runs parsed by that command's own parser, so a renamed flag fails here and not in a user's build."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import tomllib

from trocr_build import cli as build_cli
from trocr_build.repository import ServingOptions
from trocr_serving.launcher import cli as serve_cli

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
# NVIDIA's container release of each Triton server version (its support matrix); the pip server is 2.51.
TRITON_CONTAINER_RELEASES = {"2.51.0": "24.10"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> dict[str, list[tuple[str, str]]]:
    result, current = {}, None
    for instruction, arguments in instructions():
        if instruction == "FROM":
            current = arguments.split(" AS ")[-1].strip() if " AS " in arguments else arguments
            result[current] = [(instruction, arguments)]
        elif current is not None:
            result[current].append((instruction, arguments))
    return result


def arg_defaults() -> dict[str, str]:
    return dict(
        arguments.split("=", 1)
        for instruction, arguments in instructions()
        if instruction == "ARG" and "=" in arguments
    )


def project_commands(stage: str, program: str) -> list[list[str]]:
    defaults = arg_defaults()
    commands = []
    for instruction, arguments in stages()[stage]:
        if instruction != "RUN":
            continue
        for part in arguments.split("&&"):
            words = [re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m[1], m[0]), w) for w in shlex.split(part)]
            if words and words[0] == program:
                commands.append(words[1:])
    return commands


def entrypoint(stage: str) -> list[str]:
    (arguments,) = [a for instruction, a in stages()[stage] if instruction == "ENTRYPOINT"]
    return json.loads(arguments)


def test_the_images_and_their_stages():
    assert set(stages()) >= {"builder", "repository-cpu", "repository-gpu", "cpu", "gpu"}
    assert stages()["gpu"][0][1] == "nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3 AS gpu"


@pytest.mark.parametrize(("stage", "device"), [("repository-cpu", "cpu"), ("repository-gpu", "cuda")])
def test_each_repository_is_built_for_its_device(stage, device):
    (argv,) = project_commands(stage, "trocr-build")
    args = build_cli.parser().parse_args(argv)
    assert (args.device, args.output) == (device, Path("/models"))
    ServingOptions(device=args.device, precision=args.precision, tensorrt=args.tensorrt)  # a valid combination


@pytest.mark.parametrize(
    ("stage", "stock_server"), [("cpu", None), ("gpu", Path("/opt/tritonserver/bin/tritonserver"))]
)
def test_each_image_serves_its_repository_with_trocr_serve(stage, stock_server):
    command = entrypoint(stage)
    assert command[0] == "trocr-serve"
    args = serve_cli.parser().parse_args(command[1:])
    assert (args.model_repository, args.host, args.tritonserver) == (Path("/models"), "0.0.0.0", stock_server)


def test_the_gpu_image_matches_the_pinned_server_and_installs_an_existing_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert arg_defaults()["TRITON_RELEASE"] == TRITON_CONTAINER_RELEASES["2.51.0"]
    assert "nvidia-pytriton==0.7.0" in extras["serve"]  # the pip server: tritonserver 2.51.0
    installs = " ".join(a for i, a in stages()["gpu"] if i == "RUN")
    (extra,) = re.findall(r"\[([\w-]+)\]", installs)
    assert any(requirement.startswith("onnxruntime-gpu==") for requirement in extras[extra])
