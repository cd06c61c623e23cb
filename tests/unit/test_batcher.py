"""Continuous batching in-process (ONNX Runtime on the exported random:tiny graphs) against HF generate()."""

from __future__ import annotations

import numpy as np
import pytest

from tests.images import sample_paths, text_line
from tests.reference import pixel_values_of, reference_generate
from trocr_serving import graph_names as names
from trocr_serving.batcher import ContinuousBatcher, SequenceGroup
from trocr_serving.onnx_runtime import GraphRunner
from trocr_serving.pipeline_config import PipelineConfig
from trocr_serving.refusals import QueueFullError
from trocr_serving.search import SearchParams, new_search


def images(count: int) -> list[bytes]:
    data = [p.read_bytes() for p in sample_paths()] + [text_line(f"row {i}", width=150 + 30 * i) for i in range(count)]
    return data[:count]


class Harness:
    def __init__(self, built, max_rows: int = 16, max_queued: int = 64):
        self.built = built
        self.config = PipelineConfig.load(built.repository / "trocr" / "1")
        self.encoder = GraphRunner(built.repository / "encoder" / "1" / names.ENCODER_ONNX)
        self.decoder = GraphRunner(built.repository / "decoder" / "1" / names.DECODER_ONNX)
        self.batcher = ContinuousBatcher(
            self.config.decoder,
            max_rows=max_rows,
            max_cache_len=self.config.max_new_tokens_limit + 1,
            max_queued=max_queued,
            start_token=self.config.generation.decoder_start_token_id,
        )
        self.batch_sizes: list[int] = []

    def groups(self, data: list[bytes], max_new_tokens: int, num_beams: int = 1, **params) -> list[SequenceGroup]:
        pixel_values = pixel_values_of(self.built.processor, data).numpy()
        cross = self.encoder.run({names.PIXEL_VALUES: pixel_values}, [names.CROSS_KEY_VALUES])
        g = self.config.generation
        search_params = SearchParams(
            max_new_tokens=max_new_tokens,
            eos_token_id=g.eos_token_id,
            decoder_start_token_id=g.decoder_start_token_id,
            num_beams=num_beams,
            **params,
        )
        return [SequenceGroup(new_search(search_params), row) for row in cross[names.CROSS_KEY_VALUES]]

    def step(self) -> list[SequenceGroup]:
        self.batcher.admit()
        inputs = self.batcher.step_inputs()
        self.batch_sizes.append(len(inputs[names.INPUT_IDS]))
        out = self.decoder.run(inputs)
        return self.batcher.apply(out[names.LOG_PROBS], out[names.NEW_KEY_VALUES])

    def run(self) -> None:
        while self.batcher.groups or self.batcher.waiting:
            self.step()


def assert_matches(groups, references, score_atol=1e-3):
    for index, (group, reference) in enumerate(zip(groups, references)):
        result = group.search.result()
        assert result.token_ids == reference.token_ids, f"image {index}"
        assert result.score == pytest.approx(reference.score, abs=score_atol), f"image {index}"


def test_sequences_joining_at_different_steps_match_greedy_generate(built_tiny):
    harness = Harness(built_tiny)
    data = images(9)
    limits = [3, 20, 7, 12, 20, 5, 16, 9, 20]
    references = [reference_generate(built_tiny.model, built_tiny.processor, [d], n)[0] for d, n in zip(data, limits)]
    all_groups = []
    for index, (image, limit) in enumerate(zip(data, limits)):
        groups = harness.groups([image], limit)
        harness.batcher.submit(groups)
        all_groups += groups
        for _ in range(index % 3):  # let the running batch advance before the next image joins
            harness.step()
    harness.run()
    assert_matches(all_groups, references)
    assert max(harness.batch_sizes) > 1 and len(set(harness.batch_sizes)) > 1
    assert harness.batcher.active_rows == 0


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"length_penalty": 2.0, "early_stopping": True},
        {"length_penalty": 0.5, "early_stopping": "never"},
        {"no_repeat_ngram_size": 2},
    ],
    ids=["defaults", "lp2-early", "lp0.5-never", "no-repeat-2"],
)
def test_beam_search_matches_generate(built_tiny, params):
    harness = Harness(built_tiny, max_rows=32)
    data = images(4)
    references = reference_generate(built_tiny.model, built_tiny.processor, data, 12, num_beams=3, **params)
    groups = harness.groups(data, 12, num_beams=3, **params)
    harness.batcher.submit(groups)
    harness.run()
    assert_matches(groups, references)


def test_greedy_and_beam_share_steps(built_tiny):
    harness = Harness(built_tiny, max_rows=32)
    data = images(4)
    greedy = harness.groups(data[:2], 10)
    beams = harness.groups(data[2:], 10, num_beams=4)
    harness.batcher.submit(greedy + beams)
    harness.run()
    assert_matches(greedy, reference_generate(built_tiny.model, built_tiny.processor, data[:2], 10))
    assert_matches(beams, reference_generate(built_tiny.model, built_tiny.processor, data[2:], 10, num_beams=4))
    assert harness.batch_sizes[0] == 2 + 2 * 4


def test_ignore_eos_generates_exactly_max_new_tokens(built_tiny):
    harness = Harness(built_tiny)
    groups = harness.groups(images(3), 25, ignore_eos=True)
    harness.batcher.submit(groups)
    harness.run()
    assert [len(g.search.result().token_ids) for g in groups] == [25, 25, 25]


def test_rows_beyond_the_limit_wait_and_the_queue_is_bounded(built_tiny):
    harness = Harness(built_tiny, max_rows=2, max_queued=3)
    harness.batcher.submit(harness.groups(images(3), 5))
    harness.batcher.submit(harness.groups(images(2), 5))  # 5 waiting: 2 will take the free rows, 3 queue
    with pytest.raises(QueueFullError, match="server busy: 5 sequences already wait"):
        harness.batcher.submit(harness.groups(images(1), 5))
    harness.batcher.admit()
    assert harness.batcher.active_rows == 2 and len(harness.batcher.waiting) == 3
    harness.run()
    assert harness.batch_sizes[0] == 2 and max(harness.batch_sizes) <= 2


def test_removing_a_group_frees_its_rows_and_keeps_the_others_right(built_tiny):
    harness = Harness(built_tiny)
    data = images(4)
    references = reference_generate(built_tiny.model, built_tiny.processor, [data[0], data[2], data[3]], 15)
    groups = harness.groups(data, 15, ignore_eos=False)
    harness.batcher.submit(groups)
    harness.step()
    harness.step()
    harness.batcher.remove(groups[1])  # e.g. the client cancelled: its row is reused
    assert harness.batcher.active_rows == sum(1 for g in groups if g.rows)
    harness.run()
    assert_matches([groups[0], groups[2], groups[3]], references)
    assert np.all(harness.batcher.last_tokens[: harness.batcher.active_rows] >= 0)
