"""A wheel install works like an editable one, and its repository needs nothing that a stock Triton lacks.

The wheel is built from a copy of the source tree and installed into a fresh virtual environment; its
dependencies come from this environment's site-packages (a .pth file, which does not bring this environment's
editable install of the project: its own .pth files are not read from there), so every `trocr_*` module the
new environment imports is the wheel's. That environment builds the repository from package data only, serves
it with the project's launcher, and a `tritonserver` started directly, without the launcher's site module,
loads the same repository with the packages made importable by the server's Python the way NVIDIA's container
does it (installed into that Python: here, its user site-packages).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.source_tree import copy_source
from trocr_client import TrOCRClient
from trocr_client.images import sample_paths
from trocr_serving.launcher.server import free_ports, prepare_backends

pytestmark = pytest.mark.integration


@dataclass
class Installed:
    root: Path
    python: Path
    site_packages: Path
    repository: Path
    env: dict

    def run(self, *argv, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in argv], env=self.env, capture_output=True, text=True, check=True, timeout=900, **kwargs
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("wheel-install")
    source = root / "source"  # setuptools writes build/ into the tree it builds: not into this checkout's build/
    copy_source(source)
    wheels = root / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source], check=True)
    (wheel,) = wheels.glob("trocr_triton-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True)
    site_packages = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site_packages / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(root / "home"),
        "TROCR_TRITON_CACHE": str(root / "cache"),
    }
    return Installed(root, python, site_packages, root / "cache" / "demo-repository", env)


def test_the_wheel_holds_the_package_data_and_is_what_the_new_environment_imports(installed):
    code = (
        "import trocr_build, trocr_client, trocr_loadtest, trocr_serving\n"
        "from trocr_serving.paths import MODEL_FILES_DIR\n"
        "from trocr_client.images import sample_paths\n"
        "from trocr_build.eval_sets import HELDOUT_SET_DIR\n"
        "for module in (trocr_build, trocr_client, trocr_loadtest, trocr_serving): print(module.__file__)\n"
        "print(sorted(p.name for p in MODEL_FILES_DIR.glob('*.py')))\n"
        "print(len(sample_paths()), len(list(HELDOUT_SET_DIR.glob('images/*.jpg'))))\n"
    )
    lines = installed.run(installed.python, "-c", code).stdout.splitlines()
    assert all(Path(line).is_relative_to(installed.site_packages) for line in lines[:4]), lines
    assert lines[4:] == ["['scheduler.py', 'trocr.py']", f"{len(sample_paths())} 200"]


@pytest.fixture(scope="module")
def demo_output(installed) -> str:
    """`trocr-demo` of the wheel install: builds its repository, serves it, transcribes the samples."""
    return installed.run("trocr-demo", "--model", "random:tiny").stdout


def test_a_wheel_install_builds_a_repository_of_models_only_and_serves_it(installed, demo_output):
    assert sorted(p.name for p in installed.repository.iterdir()) == [
        "build_info.json",
        "scheduler",
        "trocr",
    ]
    code = [p.relative_to(installed.repository) for p in installed.repository.rglob("*.py")]
    assert sorted(map(str, code)) == ["scheduler/1/model.py", "trocr/1/model.py"]
    assert f"{len(sample_paths())} images transcribed by random:tiny through Triton" in demo_output


@dataclass
class StockServer:
    """A tritonserver install as in NVIDIA's container: pip's binary run as it is, its backends without the
    launcher's site module, and the packages installed into the Python its stub embeds."""

    binary: Path
    backends: Path
    env: dict


@pytest.fixture(scope="module")
def stock(installed) -> StockServer:
    import pytriton

    root = Path(pytriton.__file__).resolve().parent
    backends = prepare_backends(installed.root / "stock", site_module=False)
    assert not list(backends.rglob("trocr_triton_site*"))
    # As `pip install` into the server's own Python would: the wheel's packages and their dependencies on the
    # path of the Python that the backend stub embeds (its user site-packages, under this HOME).
    user_site = (
        Path(installed.env["HOME"]) / ".local" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    (user_site / "site-packages").mkdir(parents=True, exist_ok=True)
    (user_site / "site-packages" / "trocr-triton.pth").write_text(
        f"{installed.site_packages}\n{sysconfig.get_path('purelib')}\n"
    )
    env = {
        **installed.env,
        "LD_LIBRARY_PATH": str(root.parent / "nvidia_pytriton.libs"),
        "OMP_NUM_THREADS": "2",
    }
    return StockServer(root / "tritonserver" / "bin" / "tritonserver", backends, env)


def _serve_and_check(installed: Installed, command: list, env: dict, log_name: str, ports: dict, demo_output: str):
    """Start `command`, wait until the server is ready, transcribe the samples as the launcher's server did,
    stop it with SIGTERM; returns its exit code."""
    log_path = installed.root / log_name
    with log_path.open("w") as log:
        server = subprocess.Popen([str(a) for a in command], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        ready = False
        while not ready and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/v2/health/ready", timeout=2) as reply:
                    ready = reply.status == 200
            except OSError:
                time.sleep(1)
        assert ready, f"the server did not become ready:\n{log_path.read_text()[-4000:]}"
        with TrOCRClient(f"127.0.0.1:{ports['grpc']}", timeout_s=120) as client:
            results = client.transcribe(sample_paths())
        assert all(result.ok for result in results)
        for result in results:  # what the launcher's server read, beside each sample's true text
            assert f"read: {result.text}\n" in demo_output
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return server.returncode


def test_a_stock_tritonserver_loads_the_repository_with_the_packages_in_its_python(installed, demo_output, stock):
    ports = dict(zip(("grpc", "http", "metrics"), free_ports(3)))
    command = [
        stock.binary,
        f"--model-repository={installed.repository}",
        f"--backend-directory={stock.backends}",
        *(f"--{name}-address=127.0.0.1" for name in ports),
        *(f"--{name}-port={port}" for name, port in ports.items()),
    ]
    _serve_and_check(installed, command, stock.env, "stock-server.log", ports, demo_output)


def test_trocr_serve_runs_a_stock_tritonserver_as_in_the_container(installed, demo_output, stock):
    """The container's command: the launcher (admin key, drain, stub watchdog) around the stock server."""
    ports = dict(zip(("grpc", "http", "metrics"), free_ports(3)))
    command = [
        "trocr-serve",
        f"--model-repository={installed.repository}",
        f"--tritonserver={stock.binary}",
        f"--backend-directory={stock.backends}",
        *(f"--{name}-port={port}" for name, port in ports.items()),
    ]
    code = _serve_and_check(installed, command, stock.env, "trocr-serve-stock.log", ports, demo_output)
    log = (installed.root / "trocr-serve-stock.log").read_text()
    assert code == 0, log[-4000:]
    assert f"starting {stock.binary} with the backends of {stock.backends}" in log
