"""The `trocr` model as a service written in another language calls it: raw protobuf over gRPC (the messages
of Triton's grpc_service.proto, no client library), a JSON body over HTTP with base64 images, and KServe
request-level parameters, which are honoured or refused, never ignored."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from tests.images import NOT_AN_IMAGE, text_line
from tests.raw_wire import bytes_tensor, model_infer, post_json, read_bytes_tensor
from trocr_client.client import build_inputs, parse_outputs

pytestmark = pytest.mark.integration

LINES = [text_line("raw protobuf"), text_line("json body", width=240)]


def reference(served, images: list[bytes], **parameters):
    """The same request through tritonclient's per-row tensors."""
    with grpcclient.InferenceServerClient(served.server.grpc_url) as client:
        return parse_outputs(client.infer("trocr", build_inputs(images, **parameters)))


def test_raw_protobuf_with_a_request_parameter(tiny):
    request = service_pb2.ModelInferRequest(model_name="trocr")
    request.inputs.add(name="image", datatype="BYTES", shape=[len(LINES), 1])
    request.raw_input_contents.append(bytes_tensor(LINES))
    request.parameters["num_beams"].int64_param = 3
    request.parameters["max_new_tokens"].int64_param = 6
    response = model_infer(tiny.server.grpc_url, request)
    outputs = {tensor.name: raw for tensor, raw in zip(response.outputs, response.raw_output_contents)}
    texts = [item.decode() for item in read_bytes_tensor(outputs["text"])]
    codes = np.frombuffer(outputs["error_code"], dtype="<i4").tolist()
    expected = reference(tiny, LINES, num_beams=3, max_new_tokens=6)
    assert texts == [r.text for r in expected] and codes == [0, 0]
    assert np.frombuffer(outputs["score"], dtype="<f4").tolist() == pytest.approx([r.score for r in expected])


def test_an_unknown_request_parameter_is_refused_naming_it(tiny):
    with (
        grpcclient.InferenceServerClient(tiny.server.grpc_url) as client,
        pytest.raises(InferenceServerException) as caught,
    ):
        client.infer("trocr", build_inputs(LINES[:1]), parameters={"beam_width": 3})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "unknown request parameter 'beam_width'" in caught.value.message()


def test_a_json_body_with_base64_images_as_curl_sends_it(tiny):
    """The README's curl example: base64 text in a JSON body, parameters at the request level."""
    images = [*LINES, NOT_AN_IMAGE]
    body = {
        "parameters": {"image_encoding": "base64", "max_new_tokens": 6},
        "inputs": [
            {
                "name": "image",
                "shape": [len(images), 1],
                "datatype": "BYTES",
                "data": [base64.b64encode(image).decode() for image in images],
            }
        ],
    }
    status, answer = post_json(tiny.server.http_url, "trocr", body)
    assert status == 200, answer
    outputs = {output["name"]: output["data"] for output in answer["outputs"]}
    expected = reference(tiny, LINES, max_new_tokens=6)
    assert outputs["text"][:2] == [r.text for r in expected] and outputs["error_code"] == [0, 0, 3]
    assert outputs["error"][2].startswith("image 2: not a decodable image")


def test_a_json_body_without_the_encoding_parameter_names_the_problem(tiny):
    body = {
        "inputs": [
            {"name": "image", "shape": [1, 1], "datatype": "BYTES", "data": [base64.b64encode(LINES[0]).decode()]}
        ]
    }
    status, answer = post_json(tiny.server.http_url, "trocr", body)
    assert status == 400 and "image 0: not a decodable image" in answer["error"]


def test_http_with_triton_s_binary_data_extension(tiny):
    """The images as framed bytes after the JSON header (no base64), the text outputs asked back as JSON."""
    framed = bytes_tensor(LINES)
    header = json.dumps(
        {
            "parameters": {"max_new_tokens": 6},
            "inputs": [
                {
                    "name": "image",
                    "shape": [len(LINES), 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(framed)},
                }
            ],
            "outputs": [{"name": "text", "parameters": {"binary_data": False}}],
        }
    ).encode()
    request = urllib.request.Request(
        f"{tiny.server.http_url}/v2/models/trocr/infer",
        data=header + framed,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    (text,) = [output["data"] for output in answer["outputs"] if output["name"] == "text"]
    assert text == [r.text for r in reference(tiny, LINES, max_new_tokens=6)]
