"""Bad input gets a clear error, loses nothing else, and the server goes on serving: a bad image its own error
beside its neighbours' texts, a request with only bad images or a bad parameter INVALID_ARGUMENT."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.images import NOT_AN_IMAGE, text_line, truncated_png
from trocr_client import InvalidInputError
from trocr_client.client import build_inputs, parse_outputs
from trocr_loadtest.server_metrics import scrape, total
from trocr_serving.triton_adapters.bls_status import STATUS_OUTPUTS

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


def test_a_bad_image_amid_good_ones_gets_its_own_error_and_the_others_their_texts(tiny):
    good = [text_line("a"), text_line("b", width=200), text_line("c", width=260)]
    alone = raw_infer(tiny, good, max_new_tokens=8)
    before = scrape(tiny.server.metrics_url)
    mixed = raw_infer(tiny, [good[0], NOT_AN_IMAGE, good[1], truncated_png(), good[2]], max_new_tokens=8)
    failed_images = total(scrape(tiny.server.metrics_url), "trocr_images_failed_total") - total(
        before, "trocr_images_failed_total"
    )
    assert failed_images == 2
    assert [r.error_code for r in mixed] == [0, 3, 0, 3, 0]
    assert mixed[1].error.startswith("image 1: not a decodable image") and "image 3: corrupt" in mixed[3].error
    # the same texts, scores and tokens as without the bad ones
    assert [(mixed[i].text, mixed[i].score, mixed[i].token_ids) for i in (0, 2, 4)] == [
        (r.text, r.score, r.token_ids) for r in alone
    ]
    assert mixed[1].text == "" and mixed[1].token_ids == () and all(r.ok for r in alone)


def test_a_request_of_bad_images_only_is_invalid_argument_naming_each(tiny):
    with pytest.raises(InferenceServerException) as caught:
        raw_infer(tiny, [NOT_AN_IMAGE, b""])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "every image of the request is bad: image 0: not a decodable image" in caught.value.message()
    assert "image 1: empty image" in caught.value.message()


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


def test_a_missing_image_input_is_invalid_argument(tiny):
    client = grpcclient.InferenceServerClient(tiny.server.grpc_url)
    tokens = grpcclient.InferInput("max_new_tokens", [1, 1], "INT32")
    tokens.set_data_from_numpy(np.full((1, 1), 4, dtype=np.int32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("trocr", [tokens])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "image" in caught.value.message()
    client.close()


def test_a_request_that_can_never_fit_names_the_limit(tiny):
    with pytest.raises(InferenceServerException, match="beam-tokens .* the limit per request is 8192") as caught:
        raw_infer(tiny, [text_line(f"wide {i}") for i in range(40)], num_beams=16, max_new_tokens=31)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_the_internal_scheduler_checks_the_same_bounds(tiny):
    """Callers can reach `scheduler` directly over gRPC streaming: it must refuse what the public model would."""
    config = grpcclient.InferenceServerClient(tiny.server.grpc_url).get_model_config("scheduler", as_json=True)
    shape = [1, *(int(d) for d in config["config"]["input"][0]["dims"][1:])]
    arrays = {
        "pixels": np.zeros(shape, dtype=np.uint8),
        "max_new_tokens": np.array([4], dtype=np.int32),
        "num_beams": np.array([17], dtype=np.int32),
        "ignore_eos": np.array([False]),
    }
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(
            name,
            list(array.shape),
            "BOOL" if array.dtype == bool else {np.uint8: "UINT8", np.int32: "INT32"}[array.dtype.type],
        )
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    answers = []
    client = grpcclient.InferenceServerClient(tiny.server.grpc_url)
    client.start_stream(callback=lambda result, error: answers.append((result, error)))
    client.async_stream_infer("scheduler", inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in STATUS_OUTPUTS])
    client.stop_stream()  # waits for the answer
    client.close()
    (result, error), *_ = answers
    assert error is None
    code, message, _ = (result.as_numpy(name).reshape(-1)[0].decode() for name in STATUS_OUTPUTS)
    assert code == "INVALID_ARG" and "num_beams=17 is out of range" in message
