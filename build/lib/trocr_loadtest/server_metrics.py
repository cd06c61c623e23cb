"""Server-side figures from Triton's /metrics, parsed with prometheus_client's real parser."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics_url: str, timeout_s: float = 10.0) -> Samples:
    with urllib.request.urlopen(metrics_url, timeout=timeout_s) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of a sample over the series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (found_name, found), value in samples.items() if found_name == name and wanted <= set(found))


@dataclass(frozen=True)
class ServerFigures:
    """What happened on the server between two scrapes."""

    decoder_steps: float
    decoder_mean_batch: float
    encoder_calls: float
    encoder_mean_batch: float
    tokens_generated: float
    queue_wait_mean_s: float
    trocr_queue_mean_ms: float  # Triton's queue in front of the `trocr` instances
    trocr_compute_mean_ms: float
    rejected: float

    @classmethod
    def between(cls, before: Samples, after: Samples) -> ServerFigures:
        def delta(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        def ratio(numerator: float, denominator: float) -> float:
            return numerator / denominator if denominator else float("nan")

        steps = delta("trocr_decoder_batch_size_count")
        encoder_calls = delta("trocr_onnx_batch_size_count", model="encoder")
        requests = delta("nv_inference_request_success_total", model="trocr")
        return cls(
            decoder_steps=steps,
            decoder_mean_batch=ratio(delta("trocr_decoder_batch_size_sum"), steps),
            encoder_calls=encoder_calls,
            encoder_mean_batch=ratio(delta("trocr_onnx_batch_size_sum", model="encoder"), encoder_calls),
            tokens_generated=delta("trocr_tokens_generated_total"),
            queue_wait_mean_s=ratio(delta("trocr_queue_wait_seconds_sum"), delta("trocr_queue_wait_seconds_count")),
            trocr_queue_mean_ms=ratio(delta("nv_inference_queue_duration_us_total", model="trocr"), requests) / 1e3,
            trocr_compute_mean_ms=ratio(delta("nv_inference_compute_infer_duration_us_total", model="trocr"), requests)
            / 1e3,
            rejected=delta("trocr_requests_rejected_total"),
        )
