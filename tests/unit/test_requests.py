import base64
import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.images import NOT_AN_IMAGE, text_line
from trocr_client import protocol
from trocr_serving.front.requests import parse_request, request_parameters
from trocr_serving.pipeline_config import DecoderShape, GenerationDefaults, ImageConfig, PipelineConfig
from trocr_serving.refusals import InvalidRequestError

CONFIG = PipelineConfig(
    source_model="test",
    image=ImageConfig(64, 64, 2, 1 / 255, (0.5,) * 3, (0.5,) * 3),
    decoder=DecoderShape(num_layers=1, num_heads=1, head_dim=4, vocab_size=10, encoder_seq_len=3, max_positions=33),
    generation=GenerationDefaults(decoder_start_token_id=2, eos_token_id=2, pad_token_id=1, max_new_tokens=20),
    clean_up_tokenization_spaces=False,
)


def images(*data: bytes) -> np.ndarray:
    return np.array(list(data), dtype=object)


def test_defaults_apply_when_parameters_are_absent():
    job = parse_request(images(text_line("a"), text_line("b")), None, None, CONFIG)
    assert job.pixels.shape == (2, 3, 64, 64)
    assert job.max_new_tokens.tolist() == [20, 20]
    assert job.num_beams.tolist() == [1, 1]
    assert job.ignore_eos.tolist() == [False, False]


def test_default_num_beams_comes_from_the_generation_config():
    config = dataclasses.replace(CONFIG, generation=dataclasses.replace(CONFIG.generation, num_beams=4))
    assert parse_request(images(text_line("a")), None, None, config).num_beams.tolist() == [4]


def test_per_row_parameters():
    job = parse_request(
        images(text_line("a"), text_line("b")), np.array([3, 32]), np.array([1, 5]), CONFIG, np.array([True, False])
    )
    assert job.max_new_tokens.tolist() == [3, 32]
    assert job.num_beams.tolist() == [1, 5]
    assert job.ignore_eos.tolist() == [True, False]


@pytest.mark.parametrize("value", [0, -1, 33])
def test_max_new_tokens_out_of_range(value):
    with pytest.raises(InvalidRequestError, match=rf"max_new_tokens={value} is out of range: use 1..32"):
        parse_request(images(text_line("a")), np.array([value]), None, CONFIG)


@pytest.mark.parametrize("value", [0, 17])
def test_num_beams_out_of_range(value):
    with pytest.raises(InvalidRequestError, match=rf"num_beams={value} is out of range: use 1..16"):
        parse_request(images(text_line("a")), None, np.array([value]), CONFIG)


def test_parameter_count_must_match_images():
    with pytest.raises(InvalidRequestError, match="max_new_tokens has 1 values for 2 images"):
        parse_request(images(text_line("a"), text_line("b")), np.array([5]), None, CONFIG)


def test_a_bad_image_gets_its_own_error_and_the_good_ones_go_on_with_their_parameters():
    job = parse_request(images(text_line("a"), NOT_AN_IMAGE, text_line("c")), np.array([3, 4, 5]), None, CONFIG)
    assert job.errors[0] is None and job.errors[2] is None
    assert job.errors[1].startswith("image 1: not a decodable image")
    assert job.good_rows == [0, 2] and len(job.pixels) == 2 and job.max_new_tokens.tolist() == [3, 5]


def test_a_request_whose_images_are_all_bad_fails_naming_them():
    with pytest.raises(InvalidRequestError, match="every image of the request is bad: image 0: .*; image 1: expected"):
        parse_request(np.array([NOT_AN_IMAGE, 7], dtype=object), None, None, CONFIG)
    with pytest.raises(InvalidRequestError, match="^image 0: not a decodable image"):
        parse_request(images(NOT_AN_IMAGE), None, None, CONFIG)


def test_empty_request():
    with pytest.raises(InvalidRequestError, match="send at least one image"):
        parse_request(images(), None, None, CONFIG)


def test_pixels_of_a_whole_request_are_bounded_before_decoding():
    side = 6000  # 36 megapixels: under the per-image limit, three of them over the per-request one
    buffer = io.BytesIO()
    Image.new("1", (side, side), 1).save(buffer, format="PNG")
    huge = buffer.getvalue()
    assert len(huge) < 1_000_000  # small to send, large once decoded
    with pytest.raises(InvalidRequestError, match=f"request of {3 * side * side} pixels exceeds the limit"):
        parse_request(images(huge, huge, huge), None, None, CONFIG)


def test_bytes_of_a_whole_request_are_bounded():
    big = text_line("a") + b"\0" * (protocol.MAX_REQUEST_BYTES // 4)
    with pytest.raises(InvalidRequestError, match="bytes of images exceeds the limit"):
        parse_request(images(*[big] * 5), None, None, CONFIG)


def test_request_parameters_apply_to_every_image_and_unknown_ones_are_refused():
    parameters = request_parameters('{"num_beams": 3, "max_new_tokens": 7, "ignore_eos": true, "timeout": 5}')
    job = parse_request(images(text_line("a"), text_line("b")), None, None, CONFIG, parameters=parameters)
    assert job.num_beams.tolist() == [3, 3] and job.max_new_tokens.tolist() == [7, 7] and job.ignore_eos.all()
    with pytest.raises(InvalidRequestError, match="unknown request parameter 'beams': this model takes"):
        request_parameters('{"beams": 3}')
    with pytest.raises(InvalidRequestError, match="num_beams must be an integer, got '3'"):
        request_parameters('{"num_beams": "3"}')
    with pytest.raises(InvalidRequestError, match="num_beams=40 is out of range"):
        parse_request(images(text_line("a")), None, None, CONFIG, parameters=request_parameters('{"num_beams": 40}'))
    with pytest.raises(InvalidRequestError, match="num_beams is both an input tensor and a request parameter"):
        parse_request(images(text_line("a")), None, np.array([2]), CONFIG, parameters={"num_beams": 2})


def test_base64_images_are_decoded_and_bad_base64_is_that_image_s_error():
    parameters = request_parameters('{"image_encoding": "base64"}')
    sent = images(base64.b64encode(text_line("a")), b"%%% not base64 %%%")
    job = parse_request(sent, None, None, CONFIG, parameters=parameters)
    plain = parse_request(images(text_line("a")), None, None, CONFIG)
    assert np.array_equal(job.pixels, plain.pixels)
    assert job.errors[1].startswith("image 1: not valid base64 (image_encoding=base64)")
    with pytest.raises(InvalidRequestError, match="image_encoding='hex': use one of binary, base64"):
        request_parameters('{"image_encoding": "hex"}')


def test_more_images_than_a_request_may_carry_are_refused_before_decoding():
    # Triton does not bound the rows of the (unbatched) public model: the model does, before any decoding.
    too_many = images(*[NOT_AN_IMAGE] * (protocol.MAX_IMAGES_PER_REQUEST + 1))
    with pytest.raises(InvalidRequestError, match="65 images in one request exceed the limit of 64"):
        parse_request(too_many, None, None, CONFIG)


def test_an_empty_request_is_refused():
    with pytest.raises(InvalidRequestError, match="image is empty: send at least one image"):
        parse_request(images(), None, None, CONFIG)


def test_a_parameter_value_that_is_not_utf8_is_refused_naming_the_parameter():
    raw = b'{"image_encoding": "bin\xc3ary", "max_new_tokens": 5}'
    with pytest.raises(InvalidRequestError, match=r"request parameter b'image_encoding' is not valid UTF-8"):
        request_parameters(raw)
    assert request_parameters(b'{"max_new_tokens": 5}') == {"max_new_tokens": 5}


def test_a_parameter_name_that_is_not_utf8_is_refused_too():
    with pytest.raises(InvalidRequestError, match=r"request parameter b'num_\\xffbeams' is not valid UTF-8"):
        request_parameters(b'{"num_\xffbeams": 1}')


@pytest.mark.parametrize(
    "parameters",
    [{"x" * 100_000: 1}, {"image_encoding": "v" * 100_000}, {"num_beams": "v" * 100_000}],
    ids=["long-name", "long-encoding", "long-value"],
)
def test_long_values_are_cut_in_error_messages(parameters):
    with pytest.raises(InvalidRequestError) as caught:
        request_parameters(json.dumps(parameters))
    message = str(caught.value)
    assert len(message) < 300 and "... (cut: 100002 characters)" in message, message
