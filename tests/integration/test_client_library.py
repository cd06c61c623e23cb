"""The client library against real servers: order and global indices over several requests, per-image errors,
sync and async alike, the contract check at connect, failover when one of two servers stops, retries across a
server restarted mid-run (no image lost or answered twice), TLS with a certificate made here, and a bearer
token that the server requires."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import pytest

from tests.images import NOT_AN_IMAGE, text_line
from trocr_client import (
    AsyncTrOCRClient,
    ContractError,
    RetryPolicy,
    ServerUnavailableError,
    Tls,
    TrOCRClient,
    TrOCRError,
)
from trocr_loadtest.server_metrics import scrape, total
from trocr_serving.launcher.server import Access, GrpcTls, TritonServer

pytestmark = pytest.mark.integration

IMAGES = [text_line(f"client {i}", width=160 + 10 * i) for i in range(20)]
PATIENT = RetryPolicy(max_attempts=100, initial_backoff_s=0.05, max_backoff_s=1.0)  # about 50 s of tries


def alone(served, images) -> list[str]:
    with served.client() as client:
        return [client.transcribe(image, max_new_tokens=6)[0].text for image in images]


def test_several_requests_come_back_in_input_order_with_global_indices_and_per_image_errors(tiny):
    images = list(IMAGES)
    images[13] = NOT_AN_IMAGE
    with TrOCRClient(tiny.server.grpc_url, images_per_request=3, max_concurrency=3) as client:
        results = client.transcribe(images, max_new_tokens=6)
    assert [r.index for r in results] == list(range(20))
    assert [r.ok for r in results] == [i != 13 for i in range(20)]
    assert results[13].error.startswith("image 13: not a decodable image") and results[13].error_code == 3
    good = [i for i in range(20) if i != 13]
    assert [results[i].text for i in good] == alone(tiny, [images[i] for i in good])


def test_a_request_of_bad_images_only_gives_them_their_own_errors_and_the_call_goes_on(tiny):
    images = [IMAGES[0], IMAGES[1], NOT_AN_IMAGE, b"\x00" * 10, IMAGES[2]]  # the second request: bad images only
    with TrOCRClient(tiny.server.grpc_url, images_per_request=2) as client:
        results = client.transcribe(images, max_new_tokens=6)
    assert [r.ok for r in results] == [True, True, False, False, True]
    assert results[2].error.startswith("image 2: not a decodable image")
    assert results[3].error.startswith("image 3: not a decodable image")


def test_the_server_never_holds_more_requests_than_the_client_s_concurrency(tiny):
    """Triton's own count of the requests its front instances serve, sampled while the client works."""
    seen, done = [], threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.append(total(scrape(tiny.server.metrics_url), "trocr_requests_in_flight"))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with TrOCRClient(tiny.server.grpc_url, images_per_request=1, max_concurrency=2) as client:
            results = client.transcribe(IMAGES[:12], max_new_tokens=20, ignore_eos=True)
    finally:
        done.set()
        sampler.join()
    assert len(results) == 12 and all(r.ok for r in results)
    assert 0 < max(seen) <= 2, seen  # never more than two at a time


def test_the_async_client_and_its_stream_give_what_the_sync_client_gives(tiny):
    async def run():
        async with AsyncTrOCRClient(tiny.server.grpc_url, images_per_request=4, max_concurrency=2) as client:
            await client.connect()
            listed = await client.transcribe(IMAGES[:9], max_new_tokens=6)
            streamed = [r async for r in client.transcribe_stream(iter(IMAGES[:9]), max_new_tokens=6)]
            return listed, streamed

    listed, streamed = asyncio.run(run())
    with TrOCRClient(tiny.server.grpc_url, images_per_request=4) as client:
        synced = list(client.transcribe_stream(IMAGES[:9], max_new_tokens=6))

    def exact(results):  # (the score's last digits depend on which images shared a decoder step)
        return [(r.index, r.text, r.token_ids, r.error_code) for r in results]

    assert exact(listed) == exact(streamed) == exact(synced) and [r.index for r in synced] == list(range(9))
    assert [r.score for r in listed] == pytest.approx([r.score for r in synced], abs=1e-4)


def test_connect_checks_the_model_s_contract(tiny):
    with TrOCRClient(tiny.server.grpc_url) as client:
        client.connect()
    with TrOCRClient(tiny.server.grpc_url, model_name="scheduler") as client, pytest.raises(ContractError) as caught:
        client.connect()
    assert "input image BYTES (served: absent)" in str(caught.value)
    with TrOCRClient("127.0.0.1:1", timeout_s=5) as client, pytest.raises(ServerUnavailableError, match="no server"):
        client.connect()


def stream_while(client: TrOCRClient, images, during) -> list:
    """Transcribe `images` in a thread, and run `during` here once the first results are in (here: a server
    started from a thread that ends would get its parent-death signal, see trocr_serving.launcher.server)."""
    results, first_results = [], threading.Event()

    def stream() -> None:
        try:
            for result in client.transcribe_stream(images, max_new_tokens=6):
                results.append(result)
                if len(results) == 4:
                    first_results.set()
        except Exception as exc:  # seen by the test as a missing result
            results.append(exc)
        first_results.set()

    worker = threading.Thread(target=stream)
    worker.start()
    first_results.wait()
    during()
    worker.join()
    return results


def test_failover_when_one_of_two_servers_stops(built_tiny, tmp_path):
    images = IMAGES * 2
    with (
        TritonServer(built_tiny.repository, log_file=tmp_path / "a.log", exit_timeout_s=5) as first,
        TritonServer(built_tiny.repository, log_file=tmp_path / "b.log", exit_timeout_s=5) as second,
    ):
        options = {"images_per_request": 2, "max_concurrency": 2, "retry": PATIENT, "timeout_s": 120}
        with TrOCRClient([first.grpc_url, second.grpc_url], **options) as client:
            results = stream_while(client, images, first.stop)
    assert [r.index for r in results] == list(range(len(images))) and all(r.ok for r in results)
    assert [r.text for r in results[:20]] == [r.text for r in results[20:]]  # the same images, the same texts


def test_a_server_restarted_mid_run_loses_no_image_and_answers_none_twice(built_tiny, tmp_path):
    server = TritonServer(built_tiny.repository, log_file=tmp_path / "first.log", exit_timeout_s=5)
    server.start(timeout_s=180)
    replacement = TritonServer(built_tiny.repository, ports=server.ports, log_file=tmp_path / "second.log")

    def restart() -> None:
        server.close()
        replacement.start(timeout_s=180)

    try:
        options = {"images_per_request": 2, "max_concurrency": 2, "retry": PATIENT, "timeout_s": 180}
        with TrOCRClient(server.grpc_url, **options) as client:
            results = stream_while(client, IMAGES, restart)
    finally:
        server.close()
        replacement.close()
    assert [r.index for r in results] == list(range(len(IMAGES))) and all(r.ok for r in results)


def self_signed_certificate(folder) -> tuple:
    key, cert = folder / "server.key", folder / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_with_a_self_signed_certificate_and_a_bearer_token_the_server_requires(tiny, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    # Triton refuses inference calls without the header (its restricted-protocol option, which expects the
    # header's name with its gRPC prefix): the token must arrive. A gateway would check `authorization`.
    token = {"triton-grpc-protocol-authorization": "Bearer s3cret"}
    restricted = ("--grpc-restricted-protocol=inference:authorization=Bearer s3cret",)
    access = Access(tls=GrpcTls(cert, key))
    tls, once = Tls(root_certificates=cert), RetryPolicy(max_attempts=1)
    repository = tiny.built.repository
    with TritonServer(repository, log_file=tmp_path / "tls.log", access=access, extra_args=restricted) as server:
        with TrOCRClient(server.grpc_url, tls=tls, headers=token, timeout_s=60) as client:
            client.connect()
            (result,) = client.transcribe(IMAGES[0], max_new_tokens=6)
        assert result.ok and result.text == alone(tiny, IMAGES[:1])[0]
        without_token = TrOCRClient(server.grpc_url, tls=tls, timeout_s=30, retry=once)
        with without_token, pytest.raises(TrOCRError) as caught:
            without_token.transcribe(IMAGES[0], max_new_tokens=6)
        assert "expecting header 'triton-grpc-protocol-authorization'" in str(caught.value)
        plaintext = TrOCRClient(server.grpc_url, headers=token, timeout_s=10, retry=once)
        with plaintext, pytest.raises(ServerUnavailableError):  # plaintext to a TLS endpoint
            plaintext.transcribe(IMAGES[0], max_new_tokens=6)
