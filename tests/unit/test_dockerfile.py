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
from trocr_serving.server_release import CONCURRENT_BLS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
# The oldest NVIDIA Triton container release with the fixes of NVIDIA's security bulletin of August 2026
# (CVE-2026-47627, critical, and two more: Triton up to 26.05 is affected).
SECURE_RELEASE_FLOOR = (26, 6)
CONSTRAINTS = {"cpu": "constraints-cpu.txt", "gpu": "constraints-gpu.txt"}


def constraints_path(image: str) -> Path:
    return DOCKERFILE.parent / CONSTRAINTS[image]


def pinned_versions(image: str) -> dict[str, str]:
    """The image's constraints file: package name -> its one version."""
    lines = [line for line in constraints_path(image).read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("==") for line in lines)


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
    for image in ("cpu", "gpu"):
        assert stages()[image][0][1] == f"nvcr.io/nvidia/tritonserver:${{TRITON_RELEASE}}-py3 AS {image}"


def test_both_images_run_a_triton_release_at_or_above_the_security_floor():
    year, month = (int(part) for part in arg_defaults()["TRITON_RELEASE"].split("."))
    assert (year, month) >= SECURE_RELEASE_FLOOR


@pytest.mark.parametrize("image", ["cpu", "gpu"])
def test_every_python_package_of_an_image_is_pinned(image):
    """The image installs the project's wheel under a constraints file that pins each package it gets (names
    from the extra's requirements down to their dependencies) to one version."""
    runs = " ".join(a for i, a in stages()[image] if i == "RUN")
    copies = [a.split() for i, a in stages()[image] if i == "COPY" and "constraints" in a]
    assert [Path(source).name for source, _ in copies] == [CONSTRAINTS[image]]
    assert f"--constraint {copies[0][1]}" in runs
    pins = pinned_versions(image)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (extra,) = re.findall(r"\[([\w-]+)\]", runs)
    for requirement in [*project["dependencies"], *project["optional-dependencies"][extra]]:
        name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{requirement} is not pinned for the {image} image"
    assert pins["numpy"].startswith("1.")  # Triton's Python backend and numpy 2: not known to work
    assert ("onnxruntime-gpu" in pins) == (image == "gpu") and ("onnxruntime" in pins) == (image == "cpu")


@pytest.mark.parametrize(("stage", "device"), [("repository-cpu", "cpu"), ("repository-gpu", "cuda")])
def test_each_repository_is_built_for_its_device(stage, device):
    (argv,) = project_commands(stage, "trocr-build")
    args = build_cli.parser().parse_args(argv)
    assert (args.device, args.output) == (device, Path("/models"))
    ServingOptions(device=args.device, precision=args.precision, tensorrt=args.tensorrt)  # a valid combination


@pytest.mark.parametrize("stage", ["repository-cpu", "repository-gpu"])
def test_the_images_front_holds_many_requests_per_instance_on_a_release_that_allows_it(stage):
    """A few front stub processes each holding many requests (one per instance took 256 stubs, ~18 GB, on a GPU)."""
    (argv,) = project_commands(stage, "trocr-build")
    args = build_cli.parser().parse_args(argv)
    assert args.trocr_requests_per_instance > 1 and args.trocr_instances < 16
    release = tuple(int(part) for part in arg_defaults()["TRITON_RELEASE"].split("."))
    assert release >= tuple(int(part) for part in CONCURRENT_BLS.container.split("."))


@pytest.mark.parametrize("stage", ["cpu", "gpu"])
def test_each_image_serves_its_repository_with_trocr_serve_and_the_containers_server(stage):
    command = entrypoint(stage)
    assert command[0] == "trocr-serve"
    args = serve_cli.parser().parse_args(command[1:])
    stock_server = Path("/opt/tritonserver/bin/tritonserver")
    assert (args.model_repository, args.host, args.tritonserver) == (Path("/models"), "0.0.0.0", stock_server)
