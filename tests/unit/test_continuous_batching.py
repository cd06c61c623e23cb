"""Continuous batching in-process (the row scheduler and the I/O-binding model runner, ONNX Runtime's CPU
provider on the exported random:tiny graphs) against HF generate(), the encoder's output bound into the rows'
buffers, and the row scheduler's plans on their own."""

from __future__ import annotations

import numpy as np
import pytest

from tests.images import sample_paths, text_line
from tests.reference import reference_generate
from trocr_build.greedy import LocalGraphs, graph_paths
from trocr_serving import graph_names as names
from trocr_serving.engine.encoder_runner import BoundEncoder
from trocr_serving.engine.model_runner import BoundModelRunner
from trocr_serving.engine.row_scheduler import GroupStatus, RowMove, RowScheduler, SequenceGroup
from trocr_serving.engine.search import SearchParams, new_search
from trocr_serving.execution import CPU
from trocr_serving.front.preprocessing import decode_image, pixels_of
from trocr_serving.pipeline_config import PipelineConfig
from trocr_serving.refusals import QueueFullError


def images(count: int) -> list[bytes]:
    data = [p.read_bytes() for p in sample_paths()] + [text_line(f"row {i}", width=150 + 30 * i) for i in range(count)]
    return data[:count]


class Harness:
    def __init__(self, built, max_rows: int = 16, max_queued: int = 64, max_encoder_batch: int = 8):
        self.built = built
        self.config = PipelineConfig.load(built.repository / "trocr" / "1")
        max_cache_len = self.config.max_new_tokens_limit + 1
        self.scheduler = RowScheduler(
            max_rows=max_rows,
            max_cache_len=max_cache_len,
            max_queued=max_queued,
            start_token=self.config.generation.decoder_start_token_id,
            max_encoder_batch=max_encoder_batch,
        )
        folder = built.repository / "scheduler" / "1"
        encoder = BoundEncoder.open(folder / names.ENCODER_ONNX, self.config, max_encoder_batch, CPU)
        self.runner = BoundModelRunner.open(self.config.decoder, max_cache_len, folder, encoder, CPU, max_rows=max_rows)
        self.batch_sizes: list[int] = []

    def pixels(self, data: list[bytes]):
        return pixels_of([decode_image(image) for image in data], self.config.image)

    def groups(self, data: list[bytes], max_new_tokens: int, num_beams: int = 1, **params) -> list[SequenceGroup]:
        g = self.config.generation
        search_params = SearchParams(
            max_new_tokens=max_new_tokens,
            eos_token_id=g.eos_token_id,
            decoder_start_token_id=g.decoder_start_token_id,
            num_beams=num_beams,
            **params,
        )
        return [SequenceGroup(new_search(search_params), image) for image in self.pixels(data)]

    def step(self) -> list[SequenceGroup]:
        """One engine-core step: schedule -> execute -> update_from_output -> commit."""
        plan = self.scheduler.schedule()
        self.batch_sizes.append(plan.rows)
        update = self.scheduler.update_from_output(self.runner.execute(plan))
        self.runner.commit(update)
        return update.finished

    def remove(self, group: SequenceGroup) -> None:
        self.runner.move(self.scheduler.remove(group))

    def run(self) -> None:
        while self.scheduler.groups or self.scheduler.waiting:
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
        harness.scheduler.submit(groups)
        all_groups += groups
        for _ in range(index % 3):  # let the running batch advance before the next image joins
            harness.step()
    harness.run()
    assert_matches(all_groups, references)
    assert max(harness.batch_sizes) > 1 and len(set(harness.batch_sizes)) > 1
    assert harness.scheduler.active_rows == 0


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
    harness.scheduler.submit(groups)
    harness.run()
    assert_matches(groups, references)


def test_greedy_and_beam_share_steps(built_tiny):
    harness = Harness(built_tiny, max_rows=32)
    data = images(4)
    greedy = harness.groups(data[:2], 10)
    beams = harness.groups(data[2:], 10, num_beams=4)
    harness.scheduler.submit(greedy + beams)
    harness.run()
    assert_matches(greedy, reference_generate(built_tiny.model, built_tiny.processor, data[:2], 10))
    assert_matches(beams, reference_generate(built_tiny.model, built_tiny.processor, data[2:], 10, num_beams=4))
    assert harness.batch_sizes[0] == 2 + 2 * 4


def test_ignore_eos_generates_exactly_max_new_tokens(built_tiny):
    harness = Harness(built_tiny)
    groups = harness.groups(images(3), 25, ignore_eos=True)
    harness.scheduler.submit(groups)
    harness.run()
    assert [len(g.search.result().token_ids) for g in groups] == [25, 25, 25]


def test_rows_beyond_the_limit_wait_and_the_queue_is_bounded(built_tiny):
    harness = Harness(built_tiny, max_rows=2, max_queued=3)
    harness.scheduler.submit(harness.groups(images(3), 5))
    harness.scheduler.submit(harness.groups(images(2), 5))  # 5 waiting: 2 will take the free rows, 3 queue
    with pytest.raises(QueueFullError, match="server busy: 5 sequences already wait"):
        harness.scheduler.submit(harness.groups(images(1), 5))
    assert harness.scheduler.schedule().rows == 2 and len(harness.scheduler.waiting) == 3
    harness.run()
    assert harness.batch_sizes[0] == 2 and max(harness.batch_sizes) <= 2


def test_removing_a_group_frees_its_rows_and_keeps_the_others_right(built_tiny):
    harness = Harness(built_tiny)
    data = images(4)
    references = reference_generate(built_tiny.model, built_tiny.processor, [data[0], data[2], data[3]], 15)
    groups = harness.groups(data, 15, ignore_eos=False)
    harness.scheduler.submit(groups)
    harness.step()
    harness.step()
    harness.remove(groups[1])  # e.g. the client cancelled: its row is reused
    scheduler = harness.scheduler
    assert scheduler.active_rows == 3 and sorted(r for g in scheduler.groups for r in g.rows) == [0, 1, 2]
    assert all(scheduler.row_groups[row] is g for g in scheduler.groups for row in g.rows)
    harness.run()
    assert_matches([groups[0], groups[2], groups[3]], references)


def group(width: int = 1, request=None) -> SequenceGroup:
    params = SearchParams(max_new_tokens=5, eos_token_id=2, decoder_start_token_id=2, num_beams=width)
    return SequenceGroup(new_search(params), pixels=f"pixels-{id(params)}", request=request)


def test_a_plan_loads_the_admitted_rows_and_gives_each_row_its_length_and_token():
    scheduler = RowScheduler(max_rows=4, max_cache_len=8, max_queued=4, start_token=2)
    first, second = group(), group(width=2)
    scheduler.submit([first])
    plan = scheduler.schedule()
    assert [load.rows for load in plan.loads] == [[0]] and plan.lengths.tolist() == [0]
    first.length, scheduler.last_tokens[0] = 3, 7  # as if it had run three steps
    scheduler.submit([second])
    plan = scheduler.schedule()
    assert [(load.group, load.rows) for load in plan.loads] == [(second, [1, 2])]
    assert plan.lengths.tolist() == [3, 0, 0] and plan.last_tokens.tolist() == [7, 2, 2]
    assert [load.pixels for load in plan.loads] == [f"pixels-{id(second.search.params)}"]
    assert second.pixels is None and second.status is GroupStatus.ENCODING  # the runner encodes it now


def test_removing_a_group_moves_the_last_rows_into_its_holes():
    scheduler = RowScheduler(max_rows=4, max_cache_len=8, max_queued=4, start_token=2)
    a, b, c = group(), group(width=2), group()
    scheduler.submit([a, b, c])
    scheduler.schedule()
    assert scheduler.remove(a) == [RowMove(source=3, target=0)]
    assert c.rows == [0] and b.rows == [1, 2] and scheduler.active_rows == 3


def test_a_request_holds_at_most_its_share_of_rows_while_others_wait():
    scheduler = RowScheduler(max_rows=4, max_cache_len=8, max_queued=8, start_token=2, max_request_rows=2)
    big, small = object(), object()
    big_groups = [group(request=big) for _ in range(3)]
    scheduler.submit(big_groups)
    scheduler.submit([group(request=small)])
    plan = scheduler.schedule()
    assert plan.rows == 3 and big_groups[2] in scheduler.waiting  # big's third image waits for small's


def test_a_step_brings_back_rows_x_top_k_candidates_and_the_cache_stays_in_the_runner_buffers(built_tiny):
    """What a step binds on the host (on a GPU, what crosses to it): the tokens and lengths in, rows x k
    candidates out with k = 2 x the widest beam of the step; the caches are bound in the buffers allocated at
    start, and the full log_probs are not fetched."""
    harness = Harness(built_tiny, max_rows=4)
    data = images(2)
    harness.scheduler.submit(harness.groups(data[:1], 5) + harness.groups(data[1:], 5, num_beams=3))
    runner = harness.runner
    for step in range(2):
        plan = harness.scheduler.schedule()
        candidates = runner.execute(plan)
        assert plan.top_k == 6 and candidates.ids.shape == candidates.log_probs.shape == (4, 6)
        outputs = {value.data_ptr(): value for value in runner.binding.get_outputs()}
        present = [outputs[cache.address] for cache in runner.caches if cache.address in outputs]
        assert len(outputs) == 3 and len(present) == 1  # log_probs is not an output of the step
        assert present[0].shape() == list(harness.config.decoder.cache_shape(4, step + 1))
        assert present[0].device_name() == "cpu"
        assert outputs[candidates.ids.ctypes.data].shape() == [4, 6]
        assert outputs[candidates.log_probs.ctypes.data].shape() == [4, 6]
        harness.runner.commit(harness.scheduler.update_from_output(candidates))


def test_the_encoders_output_is_bound_into_the_staging_buffer_and_copied_into_the_rows_on_the_device(
    built_tiny, monkeypatch
):
    """The images that join are encoded in one call whose output ONNX Runtime writes into the staging buffer
    by I/O binding, and their rows' buffers are filled from there device to device: no call returns numpy
    (InferenceSession.run is not used), and the rows hold what the encoder computes for those images."""
    harness = Harness(built_tiny, max_rows=6)
    data = images(3)
    groups = harness.groups(data[:2], 5) + harness.groups(data[2:], 5, num_beams=3)
    expected = LocalGraphs(*graph_paths(built_tiny.repository)).cross_key_values(harness.pixels(data))
    runner = harness.runner

    def no_numpy_output(*args, **kwargs):
        raise AssertionError("a session returned numpy")

    for session in (runner.encoder.session, runner.decoder, runner.row_copy):
        monkeypatch.setattr(session, "run", no_numpy_output)
    harness.scheduler.submit(groups)
    plan = harness.scheduler.schedule()
    assert [load.rows for load in plan.loads] == [[0], [1], [2, 3, 4]]
    runner.execute(plan)
    (staged,) = runner.encoder.binding.get_outputs()
    assert staged.data_ptr() == runner.encoder.staging.address and staged.device_name() == "cpu"
    assert staged.shape() == list(harness.config.decoder.cross_shape(3))
    # The rows' buffer: each layer's keys, then values, of every row (one part of max_rows rows after another).
    rows = runner.cross.value.numpy().reshape(len(runner.cross_inputs), runner.max_rows, *runner.part_shape)
    for row, image in enumerate([0, 1, 2, 2, 2]):
        got = rows[:, row].reshape(expected.shape[1:])
        np.testing.assert_allclose(got, expected[image], atol=1e-5)


def test_an_image_is_encoded_only_when_rows_are_free_for_it(built_tiny):
    harness = Harness(built_tiny, max_rows=2, max_encoder_batch=8)
    groups = harness.groups(images(3), 4, ignore_eos=True)
    harness.scheduler.submit(groups)
    harness.step()
    assert [g.status for g in groups] == [GroupStatus.RUNNING, GroupStatus.RUNNING, GroupStatus.WAITING]
    assert groups[2].pixels is not None  # it waits as its pixels: nothing of it was encoded
    harness.run()
    assert [g.status for g in groups] == [GroupStatus.FINISHED] * 3
