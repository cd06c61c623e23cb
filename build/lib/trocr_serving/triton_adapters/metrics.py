"""Custom metrics on Triton's /metrics endpoint (Python-backend MetricFamily). Runs inside the server only.

Bucket boundaries are defined once here, each with the range it has to cover.
"""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from trocr_serving.refusals import REASONS

# Batch sizes: from 1 (no batching) to the largest decoder batch the scheduler allows (64 rows by default).
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128]
# Queue wait: from sub-millisecond (free rows) to the tens of seconds an overloaded server may make a request wait.
QUEUE_WAIT_BUCKETS_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
# End-to-end request time at the public model: from a refusal in a millisecond, through one line on a GPU
# (tens of ms) and on a CPU (0.2 to 2 s), to a 64-image request or an overloaded server (tens of seconds; the
# default deadline is 60 s).
REQUEST_DURATION_BUCKETS_S = [0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]

PREFIX = "trocr_"


_FAMILIES: dict[str, pb_utils.MetricFamily] = {}  # a Metric needs its MetricFamily alive


def _family(name: str, description: str, kind) -> pb_utils.MetricFamily:
    if name not in _FAMILIES:
        _FAMILIES[name] = pb_utils.MetricFamily(name=PREFIX + name, description=description, kind=kind)
    return _FAMILIES[name]


def release_families() -> None:
    """Call from finalize(), after the model dropped its Metric objects: the backend requires Metrics to go
    before their MetricFamily, and leaving it to interpreter teardown crashes the stub at shutdown."""
    _FAMILIES.clear()


def histogram(name: str, description: str, buckets: list[float], labels: dict[str, str]):
    return _family(name, description, pb_utils.MetricFamily.HISTOGRAM).Metric(labels=labels, buckets=buckets)


def gauge(name: str, description: str, labels: dict[str, str]):
    return _family(name, description, pb_utils.MetricFamily.GAUGE).Metric(labels=labels)


def counter(name: str, description: str, labels: dict[str, str]):
    return _family(name, description, pb_utils.MetricFamily.COUNTER).Metric(labels=labels)


class SchedulerMetrics:
    def __init__(self, model: str):
        labels = {"model": model}
        self.active_sequences = gauge("active_sequences", "Decoder rows in the running batch", labels)
        self.queued_sequences = gauge("queued_sequences", "Decoder rows waiting for a free row", labels)
        self.decoder_batch_size = histogram(
            "decoder_batch_size", "Rows per batched decoder step", BATCH_SIZE_BUCKETS, labels
        )
        self.queue_wait_seconds = histogram(
            "queue_wait_seconds",
            "Time from a request's arrival to its images joining the batch",
            QUEUE_WAIT_BUCKETS_S,
            labels,
        )
        self.tokens_generated = counter("tokens_generated_total", "Tokens generated (all beams)", labels)
        self.rejected = {
            reason: counter("requests_rejected_total", "Requests refused", {**labels, "reason": reason})
            for reason in REASONS
        }


class FrontMetrics:
    """The public model's view: every request's end-to-end time, every failure by reason and status, and
    whether each instance is serving a request (the launcher drains on it before stopping)."""

    def __init__(self, model: str, instance: str):
        self.labels = {"model": model}
        self.in_flight = gauge(
            "requests_in_flight",
            "Requests an instance of the public model is serving",
            {**self.labels, "instance": instance},
        )
        self.request_duration_seconds = histogram(
            "request_duration_seconds",
            "Time from a request reaching the public model to its answer, errors included",
            REQUEST_DURATION_BUCKETS_S,
            self.labels,
        )
        # Triton's nv_inference_count counts requests of the (unbatched) public model, not images.
        self.images = counter("images_total", "Images in requests the public model answered", self.labels)
        self.bad_images = counter(
            "images_failed_total",
            "Images answered with their own error (error_code) in requests whose other images were transcribed",
            self.labels,
        )
        self._failures: dict[tuple[str, str], object] = {}

    def failed(self, reason: str, status: str) -> None:
        key = (reason, status)
        if key not in self._failures:
            self._failures[key] = counter(
                "requests_failed_total",
                "Requests answered with an error, by reason and status code",
                {**self.labels, "reason": reason, "code": status},
            )
        self._failures[key].increment(1)


class BatchSizeMetric:
    """Images per ONNX Runtime call of a graph (the engine's encoder batching at work)."""

    def __init__(self, model: str):
        self.metric = histogram("onnx_batch_size", "Rows per ONNX Runtime call", BATCH_SIZE_BUCKETS, {"model": model})

    def observe(self, rows: int) -> None:
        self.metric.observe(rows)
