"""Start and stop the real Triton Inference Server (the `tritonserver` binary shipped by nvidia-pytriton).

The binary has only the Python backend. Its backend stub embeds the system's libpython and ignores
PYTHONPATH, so it would import from the base interpreter's site-packages. The stub does put the backend
directory on its path: the launcher writes a small module there (`trocr_triton_site`) that puts this
interpreter's import path first (the project's environment, .pth files and editable installs included),
and every model.py imports it before anything else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from trocr_client.protocol import MODEL_NAME
from trocr_serving.execution import DeviceUnavailableError, Execution, require_gpus
from trocr_serving.launcher.watchdog import StubWatchdog
from trocr_serving.server_release import PIP_SERVER_VERSION, VERSION_ENV, ServerRelease, parse_version
from trocr_serving.stubs import StubProcess, remove_shm_region, stub_processes

LOGGER = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 300.0
# Stopping: after the drain nothing is in flight, and Triton unloads the models. Its Python backend takes about
# 1.3 s per instance: ~ModelInstanceState calls StubLauncher::UpdateHealth(), which sleeps 1 s "so that the
# child process has a chance to change the health variable" (python_backend r24.10 and main alike), and the
# core finalizes a model's instances one after another (measured: 17 instances, 1.0-1.3 s each, 22 s in all).
# Triton's exit timeout and the launcher's wait cover that, so that a normal stop kills nothing.
INSTANCE_UNLOAD_S = 1.5
STOP_MARGIN_S = 5.0  # beyond Triton's own exit timeout, before the launcher kills it
PORT_RETRIES = 3
# gRPC connections: a peer that stopped answering is dropped after a keepalive ping goes unanswered, and every
# connection is closed after an hour (gracefully: calls in flight get the grace period, longer than a request's
# default deadline; clients reconnect, which also spreads them again over replicas behind an L4 balancer).
# Triton 2.51 has no idle timeout for HTTP connections: a proxy in front sets it (deploy/, trocr-fleet's nginx).
GRPC_KEEPALIVE_TIME_MS = 60_000
GRPC_KEEPALIVE_TIMEOUT_MS = 20_000
GRPC_MAX_CONNECTION_AGE_MS = 3_600_000
GRPC_MAX_CONNECTION_AGE_GRACE_MS = 300_000
# Shared memory for tensors between the server and its Python models: the cross-attention keys/values
# of a batch of images run to tens of MB, so start big rather than grow 1 MB at a time.
SHM_DEFAULT_BYTES = 64 * 1024 * 1024
SHM_GROWTH_BYTES = 64 * 1024 * 1024


# Triton's admin APIs, closed unless the caller sends the admin key: loading a model runs its code, unloading
# takes the service down, logging and trace settings change the server, shared memory maps the host's memory.
RESTRICTED_APIS = ("model-repository", "logging", "trace", "shared-memory")
ADMIN_KEY_HEADER = "trocr-admin-key"
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
ENDPOINTS = ("grpc", "http", "metrics")


class ServerError(RuntimeError):
    """The server could not start, or died; the message carries the end of its log."""


@dataclass(frozen=True)
class GrpcTls:
    """TLS on the gRPC endpoint (Triton has none on HTTP: keep HTTP on loopback, or behind a proxy)."""

    server_cert: Path
    server_key: Path
    root_cert: Path | None = None  # given: clients must present a certificate it signed (mutual TLS)

    def args(self) -> list[str]:
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.server_cert}", f"--grpc-server-key={self.server_key}"]
        if self.root_cert is not None:
            args += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={self.root_cert}"]
        return args


@dataclass(frozen=True)
class Access:
    """Who can reach what: endpoints not exposed listen on loopback only; admin APIs need the admin key."""

    expose: tuple[str, ...] = ENDPOINTS  # endpoints bound to the server's host
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)  # random: nobody has it
    tls: GrpcTls | None = None

    def __post_init__(self):
        unknown = set(self.expose) - set(ENDPOINTS)
        if unknown:
            raise ValueError(f"unknown endpoints {sorted(unknown)}: choose from {', '.join(ENDPOINTS)}")

    def address(self, endpoint: str, host: str) -> str:
        return host if endpoint in self.expose else DEFAULT_HOST

    def args(self) -> list[str]:
        restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}={self.admin_key}"
        return [
            f"--grpc-restricted-protocol={restricted}",
            f"--http-restricted-api={restricted}",
            *(self.tls.args() if self.tls else []),
        ]


# What the server creates is its own user's alone (its stubs' shared-memory regions, which the Python backend
# creates with a fixed mode, are restricted by the models as they load: trocr_serving.stubs).
SERVER_UMASK = 0o077


# The server gets SIGTERM when the launcher dies, even by SIGKILL: util-linux's setpriv sets the parent-death
# signal and execs it. Not a preexec_fn: Python code in the child of a process with threads is unsafe (with one,
# CPython also runs its at-fork hooks there, and trocr-fleet's restart of a replica, beside its load threads,
# died with SIGSEGV in logging's hook, after a lookup of prctl there had died the same way).
SETPRIV = shutil.which("setpriv")


def parent_death_prefix() -> list[str]:
    if SETPRIV is None:
        LOGGER.warning("setpriv (util-linux) not found: tritonserver will outlive this launcher if it is killed")
        return []
    return [SETPRIV, "--pdeathsig", "TERM", "--"]


def free_ports(count: int, host: str = DEFAULT_HOST) -> list[int]:
    """`count` distinct free ports: all bound at once, so the system cannot hand out one twice (picked one by
    one, HTTP and gRPC once got the same port and the server refused to start)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port(host: str = DEFAULT_HOST) -> int:
    return free_ports(1, host)[0]


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on the port. Connections of a server that just stopped (TIME_WAIT) do not
    count: Triton binds with SO_REUSEADDR, so a server restarted on its ports starts at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _pytriton_root() -> Path:
    import pytriton  # only for its files: the server binary, libraries, backend and stubs

    return Path(pytriton.__file__).resolve().parent


def prepare_backends(directory: Path, site_module: bool = True) -> Path:
    """A backend directory holding the Python backend with the stub for this interpreter's version, and the
    site module that gives the stub this environment's import path (without it: a stock server's layout)."""
    source = _pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"nvidia-pytriton has no Python backend stub for Python {version}")
    backends = directory / "backends"
    shutil.copytree(source / "backends", backends, dirs_exist_ok=True)
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    if site_module:
        (backends / "python" / f"{SITE_MODULE}.py").write_text(_site_module_source())
    return backends


SITE_MODULE = "trocr_triton_site"


_SITE_MODULE_TEMPLATE = '''"""Written by trocr-serve's launcher: the launching environment's import path, first."""
import faulthandler
import site
import sys

faulthandler.enable()  # a stub that crashes leaves its Python stack in the server's log

# The stub ignores PYTHONDONTWRITEBYTECODE: nothing imported after this is compiled into the repository
# (model.py itself comes compiled from trocr-build).
sys.dont_write_bytecode = True
_before = list(sys.path)
for _path in {paths!r}:
    site.addsitedir(_path)  # also runs the .pth files (editable installs)
sys.path[:] = [p for p in sys.path if p not in _before] + _before
'''


def environment_paths() -> list[str]:
    """This interpreter's import path without its standard library: the stub brings its own libpython, and
    loading another build's stdlib C modules (lib-dynload) into it crashes the stub."""
    stdlib = Path(os.__file__).resolve().parent  # holds lib-dynload too; the stdlib zip is not a directory
    return [p for p in sys.path if p and Path(p).is_dir() and not Path(p).resolve().is_relative_to(stdlib)]


def _site_module_source() -> str:
    return _SITE_MODULE_TEMPLATE.format(paths=environment_paths())


def model_configs_of(repository: Path) -> dict:
    """The repository's model configs, parsed with Triton's schema, by model folder."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    return {
        path.parent.name: text_format.Parse(path.read_text(), pb.ModelConfig())
        for path in sorted(repository.glob("*/config.pbtxt"))
    }


def gpus_of(configs: dict) -> tuple[int, ...]:
    """The GPUs the models are placed on (KIND_GPU instance groups)."""
    from tritonclient.grpc import model_config_pb2 as pb

    gpus: set[int] = set()
    for config in configs.values():
        for group in config.instance_group:
            if group.kind == pb.ModelInstanceGroup.KIND_GPU:
                gpus.update(group.gpus or [0])
    return tuple(sorted(gpus))


def check_repository(repository: Path, backends: Path) -> None:
    """A repository this server cannot run fails here, at once and by name: one whose models need backends the
    server lacks (the project's own need the Python backend only: a repository of an earlier format had native
    onnxruntime models), or one built for CUDA on a machine without it."""
    configs = model_configs_of(repository)
    lacking = sorted(name for name, config in configs.items() if not (backends / config.backend).is_dir())
    if lacking:
        needed = sorted({configs[name].backend for name in lacking})
        raise ServerError(
            f"{repository}: {', '.join(lacking)} need the {', '.join(needed)} backend, which {backends} lacks "
            "(this project's models need the Python backend only: rebuild the repository with trocr-build)"
        )
    gpus = gpus_of(configs)
    if not gpus:
        return
    try:
        require_gpus(gpus)
        Execution("cuda", gpus[0]).prepare()
    except DeviceUnavailableError as exc:
        raise ServerError(str(exc)) from None


def models_in(repository: Path) -> list[str]:
    """The models of a repository: its folders with a config.pbtxt (others, like trocr_serving/, are code)."""
    return sorted(path.parent.name for path in repository.glob("*/config.pbtxt"))


def instance_count(configs: dict) -> int:
    """Model instances the configs (model_configs_of) ask for: a KIND_GPU group's count is per GPU it names."""
    return sum(
        max(group.count, 1) * max(len(group.gpus), 1) for config in configs.values() for group in config.instance_group
    )


def unload_allowance_s(instances: int) -> int:
    """How long Triton takes to unload that many model instances (INSTANCE_UNLOAD_S each)."""
    return math.ceil(INSTANCE_UNLOAD_S * instances)


@dataclass
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def pick(cls, host: str) -> Ports:
        return cls(*free_ports(3, host))


@dataclass(frozen=True)
class ServerInstall:
    """Which tritonserver runs. By default the pip one (nvidia-pytriton): its Python backend is copied with the
    stub for this interpreter and the site module that gives the stub this environment. A stock server
    (`binary`, as in NVIDIA's container: /opt/tritonserver/bin/tritonserver) runs with its own backends, all of
    them (onnxruntime too), and its Python finds the packages where they are installed."""

    binary: Path | None = None
    backends: Path | None = None  # default: <binary>/../../backends, the layout of a tritonserver install

    def server_binary(self) -> Path:
        return self.binary or _pytriton_root() / "tritonserver" / "bin" / "tritonserver"

    def backend_directory(self, workdir: Path) -> Path:
        if self.binary is None:
            return prepare_backends(workdir)
        backends = self.backends or self.binary.resolve().parent.parent / "backends"
        if not (backends / "python").is_dir():
            raise ServerError(f"{backends} has no python backend: pass the server's backend directory")
        return backends

    def environment(self) -> dict[str, str]:
        """What the server and its stubs are told about this install: the pip server's release, from which the
        models choose their mechanisms (server_release); NVIDIA's containers set it themselves."""
        return {VERSION_ENV: PIP_SERVER_VERSION} if self.binary is None else {}

    def library_path(self) -> list[str]:
        return [str(_pytriton_root().parent / "nvidia_pytriton.libs")] if self.binary is None else []


class TritonServer:
    """`with TritonServer(repository) as server:` starts tritonserver, waits until it is ready, stops it."""

    def __init__(
        self,
        model_repository: Path,
        host: str = DEFAULT_HOST,
        ports: Ports | None = None,
        log_file: Path | None = None,
        log_verbose: int = 0,
        extra_args: tuple[str, ...] = (),
        exit_timeout_s: int = 30,
        access: Access | None = None,
        watchdog: bool = True,
        install: ServerInstall | None = None,
    ):
        self.model_repository = Path(model_repository).resolve()
        self.install = install or ServerInstall()
        self.host = host
        self._fixed_ports = ports is not None
        self.ports = ports or Ports.pick(host)
        self.log_file = log_file
        self.log_verbose = log_verbose
        self.extra_args = extra_args
        # How long Triton lets in-flight requests finish and models unload when stopping.
        self.exit_timeout_s = exit_timeout_s
        self.access = access or Access()
        # Reported by the server's metadata: readiness is believed only from the server this launcher started.
        self.server_id = f"trocr-triton-{secrets.token_hex(6)}"
        self.watchdog = StubWatchdog(self) if watchdog else None
        self.process: subprocess.Popen | None = None
        self.release = ServerRelease(None)  # known once the server is ready
        # One owner of the process at a time: the watchdog's restart and stop() never act on it together, and a
        # stop cuts short a restart that is waiting for readiness.
        self._lifecycle = threading.Lock()
        self._stopping = threading.Event()
        # Every shared-memory region of a stub this launcher's servers started (seen while starting and by the
        # watchdog): a server that dies, or fails to start after loading its models, leaves them in /dev/shm.
        self.shm_regions: set[str] = set()
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._log_handle = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.access.address('http', self.host)}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.access.address('metrics', self.host)}:{self.ports.metrics}/metrics"

    def admin_headers(self, endpoint: str) -> dict[str, str]:
        """What a caller of the admin APIs sends; Triton prefixes the header's name on gRPC."""
        name = f"{GRPC_HEADER_PREFIX}{ADMIN_KEY_HEADER}" if endpoint == "grpc" else ADMIN_KEY_HEADER
        return {name: self.access.admin_key}

    def _addresses(self) -> dict[str, tuple[str, int]]:
        ports = {"grpc": self.ports.grpc, "http": self.ports.http, "metrics": self.ports.metrics}
        return {name: (self.access.address(name, self.host), port) for name, port in ports.items()}

    def command(self, backends: Path) -> list[str]:
        models = models_in(self.model_repository)
        if not models:
            raise ServerError(f"{self.model_repository} holds no model (no */config.pbtxt): run trocr-build")
        return [
            str(self.install.server_binary()),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--id={self.server_id}",
            # Explicit, so that code folders beside the models are not loaded as models; the load/unload API
            # is restricted to the admin key (see Access), which the launcher uses to drain before stopping.
            "--model-control-mode=explicit",
            *(f"--load-model={name}" for name in models),
            *(
                f"--{name}-{key}={value}"
                for name, (host, port) in self._addresses().items()
                for key, value in (("address", host), ("port", port))
            ),
            *self.access.args(),
            f"--grpc-keepalive-time={GRPC_KEEPALIVE_TIME_MS}",
            f"--grpc-keepalive-timeout={GRPC_KEEPALIVE_TIMEOUT_MS}",
            f"--grpc-max-connection-age={GRPC_MAX_CONNECTION_AGE_MS}",
            f"--grpc-max-connection-age-grace={GRPC_MAX_CONNECTION_AGE_GRACE_MS}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
            f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
            "--exit-on-error=true",
            f"--exit-timeout-secs={self.exit_timeout_s + unload_allowance_s(self._instances())}",
            "--strict-readiness=true",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [*self.install.library_path(), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
        env.update(self.install.environment())
        # ONNX Runtime keeps a device id under the user's cache folder: keep it in the server's work folder.
        env["XDG_CACHE_HOME"] = str(Path(self._workdir.name) / "cache")
        return env

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> TritonServer:
        self._stopping.clear()
        self._workdir = tempfile.TemporaryDirectory(prefix="trocr-triton-")
        self._backends = self.install.backend_directory(Path(self._workdir.name))
        check_repository(self.model_repository, self._backends)
        self.log_path = self.log_file or Path(self._workdir.name) / "tritonserver.log"
        self.startup_timeout_s = timeout_s
        for attempt in range(1, PORT_RETRIES + 1):
            busy = [
                f"{name} {host}:{port}" for name, (host, port) in self._addresses().items() if port_in_use(host, port)
            ]
            if busy and self._fixed_ports:
                raise ServerError(f"ports in use (is another server running?): {', '.join(busy)}")
            if busy:
                self.ports = Ports.pick(self.host)
                continue
            try:
                self._launch()
                if self.watchdog is not None:
                    self.watchdog.start()
                return self
            except ServerError:
                port_clash = "Address already in use" in self.log_tail()
                self.stop()
                if not (port_clash and not self._fixed_ports and attempt < PORT_RETRIES):
                    raise
                LOGGER.warning("port clash, retrying with other ports")
                self.ports = Ports.pick(self.host)
        raise ServerError(f"no free ports on {self.host} after {PORT_RETRIES} tries")

    def _launch(self) -> None:
        """Start tritonserver on the chosen ports and wait until it is ready."""
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        LOGGER.info(
            "starting %s with the backends of %s on %s (grpc %d, http %d, metrics %d), log: %s",
            self.install.server_binary(),
            self._backends,
            self.host,
            self.ports.grpc,
            self.ports.http,
            self.ports.metrics,
            self.log_path,
        )
        self.process = subprocess.Popen(
            [*parent_death_prefix(), *self.command(self._backends)],  # (setpriv execs: the same pid)
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
            umask=SERVER_UMASK,  # files and shared memory for the server's own user only
        )
        self._wait_ready(self.startup_timeout_s)

    def relaunch(self) -> None:
        """Kill the server and its stubs (its process group: after a server crash, a stub was seen left running)
        and start it again on the same ports; the watchdog calls this when part of the server died. Raises
        ServerError if the new server does not become ready, or if the server is being stopped."""
        with self._lifecycle:
            if self._stopping.is_set():
                raise ServerError("the server is stopping: not restarted")
            self._kill()
            self._log_handle.close()
            self._launch()

    def failure(self) -> str | None:
        """Why the server is down for good, or None while it serves or is being restarted: its watchdog gave up
        restarting it or, without a watchdog, it exited."""
        if self.watchdog is not None:
            return self.watchdog.gave_up
        code = None if self.process is None else self.process.poll()
        return None if code is None else f"tritonserver exited with code {code}"

    def _kill(self) -> None:
        """SIGKILL the server and its stubs (its process group), and remove the stubs' shared-memory regions,
        which only a server that stops its stubs itself removes (killed servers left gigabytes in /dev/shm)."""
        self.record_shm_regions()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.remove_dead_shm_regions()

    def record_shm_regions(self) -> list[StubProcess]:
        """The live stubs of the server now, their regions recorded for removal once they are gone."""
        stubs = stub_processes(self.process.pid)
        self.shm_regions.update(stub.shm_region for stub in stubs)
        return stubs

    def remove_dead_shm_regions(self) -> None:
        """Remove the recorded regions no live stub of the current server uses (the server does not remove those
        of stubs that were killed, nor those of a start that failed after loading the models)."""
        live = {stub.shm_region for stub in stub_processes(self.process.pid)} if self.process else set()
        for region in self.shm_regions - live:
            if remove_shm_region(region):
                LOGGER.info("removed the shared-memory region %s left by a dead stub", region)
        self.shm_regions &= live

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerError(f"tritonserver exited with code {code} while starting:\n{self.log_tail()}")
            if self._stopping.is_set():
                raise ServerError("stopped while starting")
            self.record_shm_regions()
            # Ready, and every endpoint listening: the metrics service starts after HTTP's readiness, and a caller
            # scraping at once was refused (seen in trocr-fleet right after a restart).
            if self.is_ready() and all(port_in_use(host, port) for host, port in self._addresses().values()):
                self.release = self._reported_release()
                models = ", ".join(models_in(self.model_repository))
                LOGGER.info("tritonserver is ready: %s (%s)", models, self.release.describe())
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver was not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"{self.http_url}{path}", timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            return 0, str(exc).encode()

    def is_ready(self) -> bool:
        """Ready, and the server this launcher started (not another one on the same port)."""
        if self.process is None or self.process.poll() is not None:
            return False
        status, body = self._get("/v2")
        if status != 200 or json.loads(body).get("name") != self.server_id:
            return False
        return self._get("/v2/health/ready")[0] == 200

    def _reported_release(self) -> ServerRelease:
        """The release the models were told (the environment they inherited), checked against the version the
        server reports: a wrong TRITON_SERVER_VERSION would make them use mechanisms the server lacks."""
        told = ServerRelease.current({**os.environ, **self.install.environment()})
        reported = json.loads(self._get("/v2")[1]).get("version", "")
        if told.version is not None and told.version != parse_version(reported):
            raise ServerError(f"{VERSION_ENV} says {told.version}, but the server reports version {reported!r}")
        return told

    def _instances(self) -> int:
        return instance_count(model_configs_of(self.model_repository))

    def unready_models(self) -> list[str]:
        """The repository's models the server does not report ready (from 2.65: also those whose stub died)."""
        return [name for name in models_in(self.model_repository) if self._get(f"/v2/models/{name}/ready")[0] != 200]

    def log_tail(self, lines: int = 60) -> str:
        if self._log_handle is not None:
            self._log_handle.flush()
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except (AttributeError, OSError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def drain(self) -> None:
        """Stop taking requests at the public model and wait until it has answered those it holds, while the
        models it calls still serve. On SIGTERM alone Triton refuses every new call at once, BLS calls between
        models included ("Server not ready"), so requests still queued or decoding their images failed. The
        public model is unloaded (new requests get NOT_FOUND "has no available versions", which the client
        library retries elsewhere) and the front's in-flight gauge and Triton's queue are watched until empty:
        not the unload itself, which takes about INSTANCE_UNLOAD_S per front instance and goes on while Triton
        stops."""
        if MODEL_NAME not in models_in(self.model_repository):
            return
        request = urllib.request.Request(
            f"{self.http_url}/v2/repository/models/{MODEL_NAME}/unload",
            data=b"{}",
            method="POST",
            headers=self.admin_headers("http"),
        )
        deadline = time.monotonic() + self.exit_timeout_s
        try:
            with urllib.request.urlopen(request, timeout=self.exit_timeout_s):
                pass
            while time.monotonic() < deadline and self._requests_held() > 0:
                time.sleep(0.1)
        except (OSError, ValueError) as exc:
            LOGGER.warning("could not drain %s before stopping: %s", MODEL_NAME, exc)

    def _requests_held(self) -> float:
        """Requests the public model is serving or has queued, from the server's metrics."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        held = ("trocr_requests_in_flight", "nv_inference_pending_request_count")
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in held and sample.labels.get("model") == MODEL_NAME
        )

    def stop(self) -> None:
        """Drain the public model, then SIGTERM (Triton unloads the models and exits), then SIGKILL if it has not
        exited in time."""
        self._stopping.set()  # a restart under way gives up waiting for readiness
        if self.watchdog is not None:
            self.watchdog.stop(join=False)  # no restart from now on
        with self._lifecycle:
            self._terminate()
        if self.watchdog is not None:
            # Only now: a server the watchdog relaunched gets its parent-death signal when that thread ends.
            self.watchdog.stop()
        if self.process is not None:  # regions of stubs that died unremoved
            self.remove_dead_shm_regions()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _terminate(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if self.is_ready():  # else nothing was admitted: a server cut short while starting
            self.drain()
        instances = self._instances()
        unload_s = unload_allowance_s(instances)
        LOGGER.info("stopping tritonserver: it unloads %d model instances (up to %d s)", instances, unload_s)
        self.process.terminate()
        grace_s = self.exit_timeout_s + unload_s + STOP_MARGIN_S
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            LOGGER.warning("tritonserver did not stop in %.0f s: killing it", grace_s)
            self._kill()

    def close(self) -> None:
        self.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
