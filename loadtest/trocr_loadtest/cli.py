"""`trocr-loadtest`: a throughput/latency sweep against a trocr-triton server, and a capacity plan.

With no arguments: a short closed-loop sweep (concurrency 1, 2, 4, 8, 16; 10 s each after 3 s of warm-up)
against the server at 127.0.0.1:8001, or, if none answers there, against a server it starts on the local
model repository. `--rate` runs an open-loop sweep instead (Poisson arrivals), where queueing shows up as
it does in production. Writes JSON, CSV and a PNG of the throughput-latency curve.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import sys
import time
from datetime import datetime
from pathlib import Path

from trocr_client.client import DEFAULT_URL, TrOCRClient
from trocr_client.logs import configure_logging
from trocr_loadtest.capacity import SweepPoint, plan_capacity, render_plan
from trocr_loadtest.images import image_set
from trocr_loadtest.load import LoadSpec, run_load
from trocr_loadtest.report import plot_curve, render_sweep, write_csv, write_json
from trocr_loadtest.server_metrics import ServerFigures, scrape
from trocr_loadtest.stats import summarize
from trocr_serving.launcher import TritonServer, models_in

LOGGER = logging.getLogger(__name__)
REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
RISING_RATIO = 1.05  # a last step of more than 5% is not a plateau


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trocr-loadtest", description=__doc__)
    target = p.add_argument_group("server")
    target.add_argument("--url", default=None, help=f"gRPC address (default: {DEFAULT_URL}, else start a local server)")
    target.add_argument("--metrics-url", default=None, help="Triton /metrics (default: port 8002 of --url's host)")
    target.add_argument("--repository", type=Path, default=REPOSITORY, help="for a local server")
    load = p.add_argument_group("load")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", default=None, help="closed loop: comma-separated concurrencies")
    mode.add_argument("--rate", default=None, help="open loop: comma-separated arrival rates (requests/s)")
    load.add_argument("--duration-s", type=float, default=10.0, help="measured time per setting")
    load.add_argument("--warmup-s", type=float, default=3.0)
    load.add_argument("--requests", type=int, default=None, help="stop a setting after this many requests")
    load.add_argument(
        "--images", default="samples+generated", help="samples, generated, samples+generated, or a folder"
    )
    load.add_argument("--max-new-tokens", type=int, default=None)
    load.add_argument("--num-beams", type=int, default=None)
    load.add_argument("--ignore-eos", action="store_true", help="fixed output length (benchmarks)")
    plan = p.add_argument_group("capacity plan")
    plan.add_argument("--slo-ms", type=float, default=800.0, help="latency SLO (default: %(default)s)")
    plan.add_argument("--slo-percentile", default="p95", choices=["p50", "p90", "p95", "p99", "max"])
    plan.add_argument("--target-rate", type=float, default=200.0, help="images/s the fleet must serve")
    plan.add_argument("--headroom", type=float, default=0.2, help="spare capacity as a fraction (0.2 = 20%%)")
    p.add_argument(
        "--max-error-rate",
        type=float,
        default=0.01,
        help="exit with status 1 when a setting's error rate passes this (default: %(default)s)",
    )
    p.add_argument("--output-dir", type=Path, default=None, help="default: loadtest/results/<time>")
    p.add_argument("--no-plot", action="store_true")
    return p


class Progress:
    """One status line on stderr, redrawn at most twice a second."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.5:
            self.last = now
            elapsed = now - self.started
            sys.stderr.write(f"\r  {self.label}: {done} requests measured, {elapsed:.0f} s elapsed   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


class NoServerError(RuntimeError):
    pass


def still_rising(points: list[SweepPoint], closed_loop: bool) -> str | None:
    """A warning when a closed-loop sweep's throughput still rises at its top concurrency: the plan then
    underestimates what one replica serves (and more so what it queues under open-loop arrivals)."""
    if not closed_loop or len(points) < 2:
        return None
    last, before = points[-1].images_per_s, points[-2].images_per_s
    if before > 0 and last > RISING_RATIO * before:
        return (
            f"throughput still rises at {points[-1].setting} ({before:.2f} -> {last:.2f} images/s): "
            "extend --concurrency, or plan from an open-loop sweep (--rate)"
        )
    return None


def failing_settings(points: list[SweepPoint], max_error_rate: float) -> list[str]:
    return [f"{p.setting}: {p.error_rate:.1%} errors" for p in points if p.error_rate > max_error_rate]


@contextlib.contextmanager
def server_for(args):
    """(grpc url, metrics url): the one given, the default one if it answers, or a local server we start."""
    if args.url:
        with TrOCRClient(args.url, timeout_s=10) as probe:
            if not probe.is_ready():
                raise NoServerError(f"no ready trocr model at {args.url}: nothing was sent")
        host = args.url.rsplit(":", 1)[0]
        yield args.url, args.metrics_url or f"http://{host}:8002/metrics"
        return
    with TrOCRClient(DEFAULT_URL, timeout_s=5) as probe:
        if probe.is_ready():
            LOGGER.info("using the server at %s", DEFAULT_URL)
            yield DEFAULT_URL, args.metrics_url or "http://127.0.0.1:8002/metrics"
            return
    if not models_in(args.repository):
        from trocr_build.repository import ensure_repository  # needs the build extra

        ensure_repository("random:small", args.repository)
    with TritonServer(args.repository) as server:
        yield server.grpc_url, server.metrics_url


def settings(args) -> list[tuple[str, LoadSpec]]:
    common = dict(
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        max_requests=args.requests,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        ignore_eos=True if args.ignore_eos else None,
    )
    if args.rate:
        return [(f"rate {float(r):g}/s", LoadSpec(rate_per_s=float(r), **common)) for r in args.rate.split(",")]
    concurrencies = args.concurrency or "1,2,4,8,16"
    return [(f"concurrency {int(c)}", LoadSpec(concurrency=int(c), **common)) for c in concurrencies.split(",")]


def _scrape(metrics_url: str):
    try:
        return scrape(metrics_url)
    except OSError as exc:
        LOGGER.warning("no server figures: cannot read %s (%s)", metrics_url, exc)
        return None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    images = image_set(args.images)
    output = args.output_dir or RESULTS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S")
    output.mkdir(parents=True, exist_ok=True)
    rows, points, generator = [], [], []
    with contextlib.ExitStack() as stack:
        try:
            url, metrics_url = stack.enter_context(server_for(args))
        except NoServerError as exc:
            LOGGER.error("%s", exc)
            return 2
        for label, spec in settings(args):
            before = _scrape(metrics_url)
            cpu_before, wall_before = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            progress = Progress(label, sys.stderr.isatty())
            result = run_load(url, images, spec, progress)
            progress.close()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu_s = usage.ru_utime + usage.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
            after = _scrape(metrics_url)
            server = ServerFigures.between(before, after).__dict__ if before and after else None
            summary = summarize(result.records, result.duration_s, slo_s=args.slo_ms / 1e3)
            rows.append((label, summary, server))
            points.append(
                SweepPoint(
                    label,
                    summary.images_per_s,
                    summary.latency_s,
                    1 - summary.succeeded / summary.requests if summary.requests else 1.0,
                )
            )
            generator.append(
                {
                    "setting": label,
                    "max_in_flight": result.max_in_flight,
                    "cpu_percent_of_one_core": 100 * cpu_s / (time.monotonic() - wall_before),
                }
            )
            LOGGER.info("%s: %.2f images/s, p95 %.0f ms", label, summary.images_per_s, summary.latency_s["p95"] * 1e3)
            for error, message in summary.error_examples.items():
                LOGGER.warning("%s: %d x %s, e.g. %s", label, summary.errors[error], error, message)
    plan = plan_capacity(points, args.slo_ms / 1e3, args.target_rate, args.headroom, args.slo_percentile)
    print("\n" + render_sweep(rows) + "\n")
    print(render_plan(plan) + "\n")
    for g in generator:
        print(
            f"load generator at {g['setting']}: {g['max_in_flight']} in flight at most, "
            f"{g['cpu_percent_of_one_core']:.1f}% of one core"
        )
    write_json(
        output / "sweep.json",
        {
            "url": url,
            "images": len(images),
            "settings": [{"setting": label, "summary": s, "server": server} for label, s, server in rows],
            "capacity_plan": plan,
            "load_generator": generator,
        },
    )
    write_csv(output / "sweep.csv", rows)
    if not args.no_plot:
        plot_curve(output / "throughput_latency.png", rows, args.slo_ms / 1e3, "trocr-triton: latency vs throughput")
    print(f"\nresults in {output}")
    rising = still_rising(points, closed_loop=not args.rate)
    if rising:
        LOGGER.warning("%s", rising)
    failing = failing_settings(points, args.max_error_rate)
    if failing:
        LOGGER.error("error rate above %.1f%%: %s", 100 * args.max_error_rate, "; ".join(failing))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
