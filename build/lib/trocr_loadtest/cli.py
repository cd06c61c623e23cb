"""`trocr-loadtest`: a capacity plan for a trocr-triton server, from open-loop measurements.

With no mode given, it searches for the highest Poisson arrival rate whose latency percentile meets the SLO
with errors under a bound (each rate measured in windows until stable, or marked unstable), then measures
the planned rate (one search step below the highest that passed) and 1.3x it, which should not meet the
SLO. `--rate` and `--concurrency` run fixed open-loop or closed-loop sweeps instead. The server: `--url`,
else the one at 127.0.0.1:8001 if it answers, else one it starts on the local model repository. Writes JSON
(with the run's metadata), CSV in perf_analyzer's column names, every request's latency, and a PNG of
offered versus achieved rate and latency.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from datetime import datetime
from pathlib import Path

from trocr_client.client import DEFAULT_URL, TrOCRClient
from trocr_client.logs import configure_logging
from trocr_loadtest.capacity import RateSearch, Slo, SweepPoint, plan_capacity, render_plan, search_rate
from trocr_loadtest.images import image_set
from trocr_loadtest.load import LoadSpec, Stability
from trocr_loadtest.metadata import run_metadata
from trocr_loadtest.report import RESULTS_DIR, plot, render_sweep, write_csv, write_json, write_requests_csv
from trocr_loadtest.sweep import Measured, Runner
from trocr_serving import paths
from trocr_serving.launcher.server import TritonServer, models_in

LOGGER = logging.getLogger(__name__)
RISING_RATIO = 1.05  # a last step of more than 5% is not a plateau
CONFIRM_RATIO = 1.3  # the plan is confirmed when its rate meets the SLO and this multiple of it does not
PLAN_STEPS_DOWN = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trocr-loadtest", description=__doc__)
    target = p.add_argument_group("server")
    target.add_argument("--url", default=None, help=f"gRPC address (default: {DEFAULT_URL}, else start a local server)")
    target.add_argument("--metrics-url", default=None, help="Triton /metrics (default: port 8002 of --url's host)")
    target.add_argument("--repository", type=Path, default=paths.default_repository(), help="for a local server")
    load = p.add_argument_group("load")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", default=None, help="closed-loop sweep: comma-separated concurrencies")
    mode.add_argument("--rate", default=None, help="open-loop sweep: comma-separated arrival rates (requests/s)")
    load.add_argument("--duration-s", type=float, default=10.0, help="measured time per sweep setting")
    load.add_argument("--warmup-s", type=float, default=3.0)
    load.add_argument("--requests", type=int, default=None, help="stop a sweep setting after this many requests")
    load.add_argument(
        "--images", default="samples+generated", help="samples, generated, samples+generated, or a folder"
    )
    load.add_argument("--max-new-tokens", type=int, default=None)
    load.add_argument("--num-beams", type=int, default=None)
    load.add_argument("--ignore-eos", action="store_true", help="fixed output length (benchmarks)")
    search = p.add_argument_group("rate search (the default mode)")
    search.add_argument("--measurement-interval-s", type=float, default=5.0, help="stability window (perf_analyzer's)")
    search.add_argument(
        "--min-window-requests",
        type=int,
        default=20,
        help="a window lasts until this many arrivals are expected at its rate (default: %(default)s)",
    )
    search.add_argument("--stability-percentage", type=float, default=10.0)
    search.add_argument("--max-trials", type=int, default=10, help="windows before a rate is marked unstable")
    search.add_argument("--resolution", type=float, default=0.1, help="stop when the failing rate is this close")
    plan = p.add_argument_group("capacity plan")
    plan.add_argument(
        "--slo-ms",
        type=float,
        default=5000.0,
        help="latency SLO: set your own (default: %(default)s, for the default offline model, random:small, whose "
        "random weights make every request generate its 63-token maximum: about 1 s alone on a 2-core CPU, 2.6 s "
        "p95 at 0.66 requests/s)",
    )
    plan.add_argument("--slo-percentile", default="p95", choices=["p50", "p90", "p95", "p99", "max"])
    plan.add_argument("--target-rate", type=float, default=200.0, help="images/s the fleet must serve")
    plan.add_argument("--headroom", type=float, default=0.2, help="spare capacity as a fraction (0.2 = 20%%)")
    p.add_argument(
        "--max-error-rate",
        type=float,
        default=0.01,
        help="the SLO's error bound; the exit status is 1 when a setting's errors other than overload refusals "
        "pass it (default: %(default)s)",
    )
    p.add_argument("--output-dir", type=Path, default=None, help="default: loadtest/results/<time>")
    p.add_argument("--no-plot", action="store_true")
    return p


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
            "extend --concurrency, or plan from the default open-loop search"
        )
    return None


def failing_settings(measured: list[Measured], max_error_rate: float) -> list[str]:
    """Settings whose errors other than overload refusals pass the bound (bad input, faults, transport)."""
    return [
        f"{m.setting}: {m.other_error_rate():.1%} errors ({', '.join(m.summary.errors)})"
        for m in measured
        if m.other_error_rate() > max_error_rate
    ]


@contextlib.contextmanager
def server_for(args):
    """(grpc url, metrics url, local repository): the one given, the default one if it answers, or a local
    server we start."""
    if args.url:
        with TrOCRClient(args.url, timeout_s=10) as probe:
            if not probe.is_ready():
                raise NoServerError(f"no ready trocr model at {args.url}: nothing was sent")
        host = args.url.rsplit(":", 1)[0]
        yield args.url, args.metrics_url or f"http://{host}:8002/metrics", None
        return
    with TrOCRClient(DEFAULT_URL, timeout_s=5) as probe:
        if probe.is_ready():
            LOGGER.info("using the server at %s", DEFAULT_URL)
            yield DEFAULT_URL, args.metrics_url or "http://127.0.0.1:8002/metrics", None
            return
    if not models_in(args.repository):
        from trocr_build.repository import ensure_repository  # needs the build extra

        ensure_repository("random:small", args.repository)
    with TritonServer(args.repository) as server:
        yield server.grpc_url, server.metrics_url, args.repository


def _spec(args, **load) -> LoadSpec:
    return LoadSpec(
        warmup_s=args.warmup_s,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        ignore_eos=True if args.ignore_eos else None,
        **load,
    )


def run_sweep(args, runner: Runner) -> None:
    fixed = dict(duration_s=args.duration_s, max_requests=args.requests)
    if args.rate:
        for rate in (float(r) for r in args.rate.split(",")):
            runner.measure(f"rate {rate:g}/s", _spec(args, rate_per_s=rate, **fixed))
    else:
        for concurrency in (int(c) for c in (args.concurrency or "").split(",")):
            runner.measure(f"concurrency {concurrency}", _spec(args, concurrency=concurrency, **fixed))


def run_search(args, runner: Runner, slo: Slo) -> tuple[list[SweepPoint], dict | None]:
    """Calibrate (one request at a time), search, then measure the planned rate (one search step below the
    highest passing rate, so the plan does not sit on the knee, where a re-measurement is a coin toss) and 1.3x
    it. Returns the points to plan from (the planned rate's, when it meets the SLO) and the confirmation."""
    alone = runner.measure("concurrency 1", _spec(args, concurrency=1, duration_s=args.duration_s), "calibrate")
    if failing_settings([alone], args.max_error_rate) or not alone.summary.succeeded:
        return [], None
    stability = Stability(
        window_s=args.measurement_interval_s,
        tolerance=args.stability_percentage / 100,
        max_windows=args.max_trials,
        latency_bound_s=slo.latency_s,
        min_window_requests=args.min_window_requests,
    )

    def measure(rate: float, phase: str) -> SweepPoint:
        spec = _spec(args, rate_per_s=rate, stability=stability.at_rate(rate))
        return runner.measure(f"rate {rate:.3g}/s", spec, phase).point()

    # One request at a time is served at 1 / latency: a rate any server sustains if it meets the SLO alone.
    # Below an eighth of that the server is idle: a rate missing the SLO there misses it on single requests.
    start_per_s = 1 / alone.summary.latency_s["mean"]
    search = RateSearch(start_per_s, resolution=args.resolution, min_per_s=start_per_s / 8)
    passing = [p for p in search_rate(search, slo, lambda rate: measure(rate, "search")) if slo.met_by(p)]
    if not passing:
        return [], None
    # The plan must meet the SLO when measured again: on this kind of shared machine the capacity drifts by
    # 10-15% from minute to minute, so a rate that missed steps down (at most PLAN_STEPS_DOWN times).
    planned_per_s = max(p.offered_per_s for p in passing) / (1 + args.resolution)
    at = measure(planned_per_s, "plan")
    for _ in range(PLAN_STEPS_DOWN):
        if slo.met_by(at):
            break
        planned_per_s /= 1 + args.resolution
        at = measure(planned_per_s, "plan")
    above = measure(CONFIRM_RATIO * planned_per_s, "confirm")
    confirmation = {
        "planned_rate_per_s": planned_per_s,
        "meets_slo": slo.met_by(at),
        "over_rate_per_s": CONFIRM_RATIO * planned_per_s,
        "over_meets_slo": slo.met_by(above),
        "confirmed": slo.met_by(at) and not slo.met_by(above),
    }
    return ([at] if slo.met_by(at) else []), confirmation


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    images = image_set(args.images)
    output = args.output_dir or RESULTS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S")
    output.mkdir(parents=True, exist_ok=True)
    slo = Slo(args.slo_ms / 1e3, args.slo_percentile, args.max_error_rate)
    searching = not (args.rate or args.concurrency)
    with contextlib.ExitStack() as stack:
        try:
            url, metrics_url, repository = stack.enter_context(server_for(args))
        except NoServerError as exc:
            LOGGER.error("%s", exc)
            return 2
        metadata = run_metadata(url, repository, sys.argv[:1] + (argv if argv is not None else sys.argv[1:]))
        runner = Runner(url, metrics_url, images, slo.latency_s)
        if searching:
            points, confirmation = run_search(args, runner, slo)  # the plan is the planned rate's point
        else:
            run_sweep(args, runner)
            points, confirmation = [m.point() for m in runner.measured], None
    measured = runner.measured
    plan = plan_capacity(points, slo, args.target_rate, args.headroom)
    print("\n" + render_sweep(measured) + "\n")
    print(render_plan(plan) + "\n")
    if confirmation:
        print(
            f"confirmation: the planned rate {confirmation['planned_rate_per_s']:.3g}/s "
            f"{'meets' if confirmation['meets_slo'] else 'MISSES'} the SLO; "
            f"{CONFIRM_RATIO}x it ({confirmation['over_rate_per_s']:.3g}/s) "
            f"{'MEETS' if confirmation['over_meets_slo'] else 'misses'} it"
        )
    for m in measured:
        print(
            f"load generator at {m.setting}: {m.max_in_flight} in flight at most, "
            f"{m.cpu_percent_of_one_core:.1f}% of one core"
        )
    write_json(
        output / "sweep.json",
        {
            "metadata": metadata,
            "images": len(images),
            "slo": slo,
            "settings": [
                {"phase": m.phase, "setting": m.setting, "spec": m.spec, "stable": m.stable, "summary": m.summary}
                | {"server": m.server, "max_in_flight": m.max_in_flight, "cpu_percent": m.cpu_percent_of_one_core}
                for m in measured
            ],
            "capacity_plan": plan,
            "confirmation": confirmation,
        },
    )
    write_csv(output / "sweep.csv", measured)
    write_requests_csv(output / "requests.csv", measured)
    if not args.no_plot:
        planned_per_s = confirmation["planned_rate_per_s"] if confirmation else None
        plot(
            output / "rate_latency.png", measured, slo.latency_s, "trocr-triton: one replica under load", planned_per_s
        )
    print(f"\nresults in {output}")
    rising = still_rising(points, closed_loop=bool(args.concurrency))
    if rising:
        LOGGER.warning("%s", rising)
    if confirmation and not confirmation["confirmed"]:
        LOGGER.warning("the plan is not confirmed (see above): the server's figures are noisy, measure longer")
    failing = failing_settings(measured, args.max_error_rate)
    if failing:
        LOGGER.error("error rate above %.1f%%: %s", 100 * args.max_error_rate, "; ".join(failing))
        return 1
    if searching and plan.best is None:
        LOGGER.error("no rate meets the SLO (%s)", slo.describe())
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
