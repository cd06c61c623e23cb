import numpy as np
import pytest

from tests.images import NOT_AN_IMAGE, text_line
from trocr_serving.pipeline_config import DecoderShape, GenerationDefaults, ImageConfig, PipelineConfig
from trocr_serving.requests import InvalidRequestError, parse_request

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
    assert len(job.images) == 2
    assert job.max_new_tokens.tolist() == [20, 20]


def test_per_row_max_new_tokens():
    job = parse_request(images(text_line("a"), text_line("b")), np.array([3, 32]), np.array([1, 1]), CONFIG)
    assert job.max_new_tokens.tolist() == [3, 32]


@pytest.mark.parametrize("value", [0, -1, 33])
def test_max_new_tokens_out_of_range(value):
    with pytest.raises(InvalidRequestError, match=rf"max_new_tokens={value} is out of range: use 1..32"):
        parse_request(images(text_line("a")), np.array([value]), None, CONFIG)


def test_beam_search_is_refused_clearly():
    with pytest.raises(InvalidRequestError, match="num_beams=4 is not supported yet"):
        parse_request(images(text_line("a")), None, np.array([4]), CONFIG)


def test_parameter_count_must_match_images():
    with pytest.raises(InvalidRequestError, match="max_new_tokens has 1 values for 2 images"):
        parse_request(images(text_line("a"), text_line("b")), np.array([5]), None, CONFIG)


def test_bad_image_is_named_by_index():
    with pytest.raises(InvalidRequestError, match="image 1: not a decodable image"):
        parse_request(images(text_line("a"), NOT_AN_IMAGE), None, None, CONFIG)


def test_empty_request():
    with pytest.raises(InvalidRequestError, match="send at least one image"):
        parse_request(images(), None, None, CONFIG)
