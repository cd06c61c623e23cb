"""The GPU check's parity part, run on the CPU: the same comparison of the server's tokens with generate()
that trocr-gpu-check makes on a GPU, so that a lent GPU's minutes are not spent finding its bugs."""

from __future__ import annotations

import pytest

from tests.images import sample_paths
from trocr_loadtest.gpu_check import agreement, reference_tokens, served_tokens

pytestmark = pytest.mark.integration


def test_agreement_counts_tokens_position_by_position():
    figures = agreement([[5, 6, 7], [1, 2]], [[5, 6, 8, 2], [1, 2]])
    assert figures == {"identical_images": 1, "images": 2, "token_agreement": round(4 / 6, 4)}


@pytest.mark.parametrize("num_beams", [1, 3])
def test_the_server_matches_generate_as_the_gpu_check_compares_them(built_tiny, num_beams):
    images = [path.read_bytes() for path in sample_paths()]
    got = served_tokens(built_tiny.repository, images, num_beams)
    want = reference_tokens(built_tiny.info["source"], images, num_beams)
    assert agreement(got, want) == {"identical_images": len(images), "images": len(images), "token_agreement": 1.0}
    assert min(len(tokens) for tokens in want) > 1
