"""`trocr-fleet`: several replicas on this machine behind a real L7 gRPC proxy (nginx, `grpc_pass`), a
closed-loop load through the proxy with the project's client (its retries on), one replica killed in the middle
(SIGKILL of its process group, as a lost node) and started again on its ports (as Kubernetes would). Reports
the requests lost (failed after the client's retries), the failed tries that retries hid, by status, how long
the disruption lasted (the kill to the last failed try) and when the replica served again through the proxy.

nginx retries a request on the next replica when one fails at the connection (`grpc_next_upstream error`;
OCR requests are idempotent, so also once sent: `non_idempotent`); the client retries what still comes back
UNAVAILABLE. Everything listens on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trocr_client import protocol
from trocr_client.aio import AsyncTrOCRClient
from trocr_client.errors import TrOCRError
from trocr_client.logs import configure_logging
from trocr_loadtest.images import image_set
from trocr_loadtest.report import RESULTS_DIR
from trocr_loadtest.server_metrics import scrape, total
from trocr_serving import paths
from trocr_serving.launcher.server import DEFAULT_HOST, ServerError, TritonServer, free_port

LOGGER = logging.getLogger(__name__)
PROXY_START_TIMEOUT_S = 10.0
MAX_NEW_TOKENS = 8  # short requests: many of them cross the kill
# Starts of the killed replica before giving up, as Kubernetes restarts a container that fails to start
# (Triton 2.51 once died with SIGSEGV while starting again on the ports it had just lost).
RESTART_ATTEMPTS = 3

# A request at the server's limit passes (its images plus framing and parameters); beyond, nginx refuses it.
MAX_BODY_BYTES = protocol.MAX_REQUEST_BYTES + 1024 * 1024

NGINX_CONFIG = """\
# Written by trocr-fleet: an L7 gRPC proxy in front of the replicas, on loopback.
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/client_body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  upstream replicas {{
{servers}
    keepalive 32;
  }}
  server {{
    listen {host}:{port} http2;
    # Triton 2.51 bounds no message: the proxy refuses bodies over the project's request limit (and framing).
    client_max_body_size {max_body_bytes};
    client_body_timeout 60s;
    keepalive_timeout 75s;
    location / {{
      grpc_pass grpc://replicas;
      grpc_next_upstream error timeout non_idempotent;
      grpc_next_upstream_tries {tries};
      grpc_connect_timeout 2s;
      grpc_read_timeout 300s;
      grpc_send_timeout 300s;
    }}
  }}
}}
"""


class ProxyError(RuntimeError):
    pass


class NginxProxy:
    """nginx in the foreground (its master process is the child this object started and stops, by PID)."""

    def __init__(self, nginx: Path, upstreams: list[str], host: str = DEFAULT_HOST):
        self.nginx, self.upstreams, self.host = nginx, upstreams, host
        self.port = free_port(host)
        self._work = tempfile.TemporaryDirectory(prefix="trocr-fleet-nginx-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def config(self) -> str:
        work = Path(self._work.name)
        work.chmod(0o755)  # workers run as nobody when the master runs as root
        servers = "\n".join(f"    server {upstream} max_fails=1 fail_timeout=2s;" for upstream in self.upstreams)
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        return NGINX_CONFIG.format(
            work=work,
            user=user,
            servers=servers,
            host=self.host,
            port=self.port,
            tries=len(self.upstreams),
            max_body_bytes=MAX_BODY_BYTES,
        )

    def start(self) -> NginxProxy:
        config = Path(self._work.name) / "nginx.conf"
        config.write_text(self.config())
        command = [str(self.nginx), "-p", self._work.name, "-c", str(config), "-e", f"{self._work.name}/error.log"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + PROXY_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProxyError(f"nginx exited with {self.process.returncode}: {self.process.stderr.read().decode()}")
            with socket.socket() as probe:
                if probe.connect_ex((self.host, self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise ProxyError(f"nginx did not listen on {self.url} within {PROXY_START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: its workers finish what they serve
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._work.cleanup()


@dataclass
class Timeline:
    """Seconds from the start of the load."""

    killed_at_s: float | None = None
    replica_ready_at_s: float | None = None
    replica_starts: int = 0
    failed_tries_at_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class FleetReport:
    replicas: int
    concurrency: int
    duration_s: float  # of the whole load: before the kill, the restart, and after the replica is back
    requests: int
    requests_lost: int
    lost_errors: dict[str, int]
    failed_tries_retried: dict[str, int]
    killed_at_s: float
    disruption_s: float  # from the kill to the last failed try (0: no client saw an error)
    replica_ready_after_s: float  # from the kill to the replica answering ready again
    replica_starts: int  # starts it took (more than 1: a start failed and was tried again)
    replica_served_again: bool  # requests reached the restarted replica through the proxy
    throughput_before_per_s: float
    throughput_after_per_s: float

    def render(self) -> str:
        lines = [
            f"{self.replicas} replicas behind nginx (grpc_pass), concurrency {self.concurrency}, "
            f"{self.duration_s:.0f} s of load",
            f"requests: {self.requests}, lost (failed after the client's retries): {self.requests_lost}"
            + (f" {self.lost_errors}" if self.lost_errors else ""),
            f"failed tries hidden by retries: {sum(self.failed_tries_retried.values())} {self.failed_tries_retried}",
            f"replica killed at {self.killed_at_s:.1f} s; disruption {self.disruption_s:.1f} s; ready again after "
            f"{self.replica_ready_after_s:.1f} s ({self.replica_starts} start(s)); served again through the proxy: "
            f"{self.replica_served_again}",
            f"throughput: {self.throughput_before_per_s:.1f} req/s before the kill, "
            f"{self.throughput_after_per_s:.1f} req/s after the replica is back",
        ]
        return "\n".join(lines)


async def _drive(
    client: AsyncTrOCRClient,
    images: list[bytes],
    concurrency: int,
    stop: asyncio.Event,
    timeline: Timeline,
    start: float,
) -> list[tuple[float, bool, str]]:
    """Closed loop: `concurrency` workers, one image per request, until `stop`. Returns (end time, ok, error
    status) per request."""
    records: list[tuple[float, bool, str]] = []
    retried_before = 0

    async def worker(index: int) -> None:
        nonlocal retried_before
        sent = index
        while not stop.is_set():
            image = images[sent % len(images)]
            sent += concurrency
            try:
                await client.transcribe([image], max_new_tokens=MAX_NEW_TOKENS)
                records.append((time.monotonic() - start, True, ""))
            except TrOCRError as error:
                records.append((time.monotonic() - start, False, error.status or type(error).__name__))
            retried = sum(client.retried.values())
            if retried > retried_before:
                timeline.failed_tries_at_s.append(time.monotonic() - start)
                retried_before = retried

    await asyncio.gather(*(worker(index) for index in range(concurrency)))
    return records


def _restart(replica: TritonServer, timeline: Timeline) -> None:
    """SIGKILL of the replica's process group, then a start on the same ports, tried again if it fails."""
    for attempt in range(1, RESTART_ATTEMPTS + 1):
        timeline.replica_starts = attempt
        try:
            replica.relaunch()
            return
        except ServerError as exc:
            if attempt == RESTART_ATTEMPTS:
                raise
            LOGGER.warning("the replica failed to start (%s): starting it again", str(exc).splitlines()[0])


async def _run(replicas: list[TritonServer], proxy: NginxProxy, spec: argparse.Namespace) -> FleetReport:
    images = image_set("samples+generated", 16)
    timeline = Timeline()
    victim = replicas[0]
    async with AsyncTrOCRClient(proxy.url, timeout_s=spec.timeout_s, max_concurrency=spec.concurrency) as client:
        await client.transcribe(images[:2])  # connections up before the clock starts
        start = time.monotonic()

        stop = asyncio.Event()
        load = asyncio.create_task(_drive(client, images, spec.concurrency, stop, timeline, start))
        await asyncio.sleep(spec.before_s)
        timeline.killed_at_s = time.monotonic() - start
        LOGGER.info("killing replica %s at %.1f s", victim.grpc_url, timeline.killed_at_s)
        await asyncio.to_thread(_restart, victim, timeline)
        timeline.replica_ready_at_s = time.monotonic() - start
        served_at_restart = total(scrape(victim.metrics_url), "nv_inference_request_success_total", model="trocr")
        await asyncio.sleep(spec.after_s)
        stop.set()
        records = await load
        duration_s = time.monotonic() - start
        retried = dict(client.retried)
    served_again = (
        total(scrape(victim.metrics_url), "nv_inference_request_success_total", model="trocr") > served_at_restart
    )
    lost = [status for _, ok, status in records if not ok]
    failures = [t for t in timeline.failed_tries_at_s if t >= timeline.killed_at_s] + [
        t for t, ok, _ in records if not ok and t >= timeline.killed_at_s
    ]
    before = [t for t, _, _ in records if t < timeline.killed_at_s]
    after = [t for t, _, _ in records if t >= timeline.replica_ready_at_s]
    return FleetReport(
        replicas=len(replicas),
        concurrency=spec.concurrency,
        duration_s=round(duration_s, 1),
        requests=len(records),
        requests_lost=len(lost),
        lost_errors={status: lost.count(status) for status in sorted(set(lost))},
        failed_tries_retried=retried,
        killed_at_s=round(timeline.killed_at_s, 2),
        disruption_s=round(max(failures) - timeline.killed_at_s, 2) if failures else 0.0,
        replica_ready_after_s=round(timeline.replica_ready_at_s - timeline.killed_at_s, 2),
        replica_starts=timeline.replica_starts,
        replica_served_again=served_again,
        throughput_before_per_s=round(len(before) / timeline.killed_at_s, 2),
        throughput_after_per_s=round(len(after) / (duration_s - timeline.replica_ready_at_s), 2),
    )


def run_fleet(spec: argparse.Namespace) -> FleetReport:
    nginx = spec.nginx or shutil.which("nginx")
    if nginx is None:
        raise ProxyError("nginx is needed (Debian: apt-get install nginx), or pass --nginx")
    replicas = [TritonServer(spec.repository, watchdog=False, exit_timeout_s=5) for _ in range(spec.replicas)]
    proxy = None
    try:
        for replica in replicas:
            replica.start()
        proxy = NginxProxy(Path(nginx), [replica.grpc_url for replica in replicas]).start()
        LOGGER.info("proxy %s -> %s", proxy.url, ", ".join(replica.grpc_url for replica in replicas))
        return asyncio.run(_run(replicas, proxy, spec))
    finally:
        if proxy is not None:
            proxy.stop()
        for replica in replicas:
            replica.close()


def planned_replicas(sweep_json: Path) -> int:
    """The replica count of a trocr-loadtest capacity plan."""
    plan = json.loads(sweep_json.read_text()).get("capacity_plan") or {}
    if not plan.get("replicas"):
        raise SystemExit(
            f"trocr-fleet: {sweep_json} has no capacity plan with a replica count (no setting met the SLO)"
        )
    return int(plan["replicas"])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trocr-fleet", description=__doc__)
    p.add_argument("--repository", type=Path, default=paths.default_repository(), help="default: %(default)s")
    replicas = p.add_mutually_exclusive_group()
    replicas.add_argument("--replicas", type=int, default=2)
    replicas.add_argument(
        "--plan", type=Path, default=None, help="a trocr-loadtest sweep.json: as many replicas as its capacity plan"
    )
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight through the proxy")
    p.add_argument("--before-s", type=float, default=15.0, help="load before one replica is killed")
    p.add_argument("--after-s", type=float, default=15.0, help="load after it answers ready again")
    p.add_argument("--timeout-s", type=float, default=60.0, help="each request's deadline, retries included")
    p.add_argument("--nginx", type=Path, default=None, help="the nginx binary (default: the one on PATH)")
    p.add_argument("--json", type=Path, default=None, help=f"write the report (default: {RESULTS_DIR}/fleet-*.json)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.verbose)
    if args.plan is not None:
        args.replicas = planned_replicas(args.plan)
    if args.replicas < 2:
        raise SystemExit(f"trocr-fleet: {args.replicas} replica: at least 2 are needed (one is killed)")
    try:
        report = run_fleet(args)
    except (ProxyError, ServerError) as exc:
        LOGGER.error("%s", exc)
        return 1
    print(report.render())
    path = args.json or RESULTS_DIR / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(f"report: {path}")
    return 0 if report.requests_lost == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
