"""Continuous batching through the real server: parity for mixed requests, fixed lengths, metrics, bounds."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.images import sample_paths, text_line
from tests.integration.test_parity import assert_parity
from tests.reference import reference_generate
from trocr_build.repository import ServingOptions, build_repository
from trocr_client import ServerUnavailableError
from trocr_serving.launcher.server import TritonServer

pytestmark = pytest.mark.integration


def scrape(server) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples, name: str, **labels) -> float:
    wanted = set(labels.items())
    return sum(value for (n, found), value in samples.items() if n == name and wanted <= set(found))


def images(count: int) -> list[bytes]:
    data = [p.read_bytes() for p in sample_paths()] + [
        text_line(f"mixed {i}", width=180 + 25 * i) for i in range(count)
    ]
    return data[:count]


def test_concurrent_greedy_and_beam_requests_of_different_lengths(tiny):
    data = images(10)
    settings = [(4 + 3 * i, 1 if i % 2 == 0 else 2 + i % 3) for i in range(len(data))]  # (max_new_tokens, beams)
    references = [
        reference_generate(tiny.model, tiny.processor, [image], tokens, num_beams=beams)[0]
        for image, (tokens, beams) in zip(data, settings)
    ]
    with tiny.client() as client, ThreadPoolExecutor(max_workers=len(data)) as pool:
        futures = [
            pool.submit(client.transcribe, image, tokens, beams) for image, (tokens, beams) in zip(data, settings)
        ]
        results = [f.result()[0] for f in futures]
    assert_parity(results, references)


def test_beam_search_request_with_several_images(tiny):
    data = images(3)
    references = reference_generate(tiny.model, tiny.processor, data, 15, num_beams=4)
    with tiny.client() as client:
        assert_parity(client.transcribe(data, max_new_tokens=15, num_beams=4), references)


def test_ignore_eos_gives_exactly_max_new_tokens(tiny):
    with tiny.client() as client:
        results = client.transcribe(images(3), max_new_tokens=30, ignore_eos=True)
    assert [len(r.token_ids) for r in results] == [30, 30, 30]


def test_metrics_report_batched_steps_and_tokens(tiny):
    tokens = 100  # long enough that the 8 concurrent requests overlap while decoding
    before = scrape(tiny.server)
    with tiny.client() as client, ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(client.transcribe, image, tokens, 1, None, True) for image in images(8)]
        assert all(len(f.result()[0].token_ids) == tokens for f in futures)
    after = scrape(tiny.server)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("trocr_tokens_generated_total") == 8 * tokens
    steps = delta("trocr_decoder_batch_size_count")
    assert tokens <= steps < 8 * tokens, "concurrent sequences must share decoder steps"
    assert delta("trocr_decoder_batch_size_sum") == 8 * tokens
    assert delta("trocr_queue_wait_seconds_count") == 8
    assert delta("trocr_onnx_batch_size_count", model="encoder") >= 1
    assert metric(after, "trocr_active_sequences") == 0
    assert delta("nv_inference_request_success_total", model="trocr") == 8  # Triton's own counter


@pytest.fixture(scope="module")
def constrained(tmp_path_factory):
    """random:tiny with one decoder row and one queued row: the third concurrent request is refused. Built as for
    a newer server (two requests per front instance), which Triton 2.51 serves one request per instance."""
    repository = tmp_path_factory.mktemp("constrained")
    options = ServingOptions(
        max_active_sequences=1, max_queued_sequences=1, trocr_instances=3, trocr_requests_per_instance=2
    )
    build_repository("random:tiny", repository, cache_dir=tmp_path_factory.getbasetemp() / "models", options=options)
    log = tmp_path_factory.mktemp("constrained-log") / "tritonserver.log"
    with TritonServer(repository, log_file=log, exit_timeout_s=5) as server:
        yield server


def test_a_repository_built_for_many_requests_per_instance_serves_one_per_instance_on_the_pip_server(constrained):
    log = constrained.log_tail(400)
    assert log.count("requests_per_instance 2 needs Triton 2.71 or later: 1 on this server") == 3, log


def test_requests_beyond_the_queue_bound_get_a_retryable_error(constrained):
    from trocr_client import RetryPolicy, TrOCRClient

    # no retries: each refusal the server makes reaches the test
    once = RetryPolicy(max_attempts=1)
    with TrOCRClient(constrained.grpc_url, retry=once) as client, ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(client.transcribe, text_line(f"q{i}"), 120, 1, None, True) for i in range(6)]
        outcomes = [f.exception() or f.result() for f in futures]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    served = [o for o in outcomes if not isinstance(o, Exception)]
    assert served and refused, outcomes
    assert all(isinstance(e, ServerUnavailableError) and e.retryable for e in refused), [(e, e.status) for e in refused]
    assert all("server busy" in str(e) for e in refused)
    samples = scrape(constrained)
    assert metric(samples, "trocr_requests_rejected_total", reason="queue_full") == len(refused)
    assert metric(samples, "trocr_active_sequences") == 0
    # and it still serves
    with TrOCRClient(constrained.grpc_url) as client:
        assert len(client.transcribe(text_line("after"), max_new_tokens=5)) == 1
