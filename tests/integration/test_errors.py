"""Bad input gets a clear INVALID_ARG error, loses nothing else, and the server goes on serving."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.images import NOT_AN_IMAGE, text_line, truncated_png
from trocr_client import InvalidInputError
from trocr_client.client import build_inputs, parse_outputs

pytestmark = pytest.mark.integration


def raw_infer(served, encoded: list[bytes], **parameters):
    """Through tritonclient directly, so the server (not the client library) does the checking."""
    client = grpcclient.InferenceServerClient(served.server.grpc_url)
    try:
        return parse_outputs(client.infer("trocr", build_inputs(encoded, **parameters)))
    finally:
        client.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "image 0: empty image (0 bytes)"),
        (NOT_AN_IMAGE, "image 0: not a decodable image"),
        (truncated_png(), "image 0: corrupt or truncated"),
    ],
    ids=["zero-bytes", "not-an-image", "truncated"],
)
def test_bad_image_is_invalid_argument_and_server_keeps_serving(tiny, data, message):
    with pytest.raises(InferenceServerException) as caught:
        raw_infer(tiny, [data])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in caught.value.message()
    assert len(raw_infer(tiny, [text_line("still serving")])) == 1


def test_bad_image_in_a_batch_names_its_index(tiny):
    with pytest.raises(InferenceServerException, match="image 2: not a decodable image"):
        raw_infer(tiny, [text_line("a"), text_line("b"), NOT_AN_IMAGE])


def test_bad_neighbours_do_not_fail_good_requests(tiny):
    good = [text_line(f"good {i}") for i in range(6)]
    bad = [NOT_AN_IMAGE, truncated_png(), b""] * 2
    with ThreadPoolExecutor(max_workers=12) as pool:
        good_futures = [pool.submit(raw_infer, tiny, [g], max_new_tokens=8) for g in good]
        bad_futures = [pool.submit(raw_infer, tiny, [b], max_new_tokens=8) for b in bad]
        results = [f.result() for f in good_futures]
        failures = [f.exception() for f in bad_futures]
    assert all(len(r) == 1 and r[0].token_ids for r in results)
    assert all(isinstance(f, InferenceServerException) for f in failures)
    assert {f.status() for f in failures} == {"StatusCode.INVALID_ARGUMENT"}


def test_num_beams_out_of_range(tiny):
    with pytest.raises(InferenceServerException, match="num_beams=17 is out of range"):
        raw_infer(tiny, [text_line("beam")], num_beams=17)


def test_max_new_tokens_out_of_range(tiny):
    with pytest.raises(InferenceServerException, match="max_new_tokens=0 is out of range"):
        raw_infer(tiny, [text_line("zero")], max_new_tokens=0)


def test_client_library_raises_invalid_input(tiny):
    with tiny.client() as client, pytest.raises(InvalidInputError, match="not a decodable image") as caught:
        client.transcribe(NOT_AN_IMAGE)
    assert caught.value.status == "INVALID_ARGUMENT" and not caught.value.retryable


def test_wrong_tensor_type_is_refused_by_triton(tiny):
    client = grpcclient.InferenceServerClient(tiny.server.grpc_url)
    tensor = grpcclient.InferInput("image", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.zeros((1, 1), dtype=np.int32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("trocr", [tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    client.close()
