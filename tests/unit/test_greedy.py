"""The greedy loop's bookkeeping, with a scripted decoder step in place of the ONNX graph."""

import numpy as np

from trocr_build.greedy import greedy_decode
from trocr_serving import graph_names as names
from trocr_serving.pipeline_config import DecoderShape, GenerationDefaults, ImageConfig, PipelineConfig

EOS = 2
VOCAB = 8
CONFIG = PipelineConfig(
    source_model="test",
    image=ImageConfig(8, 8, 2, 1 / 255, (0.5,) * 3, (0.5,) * 3),
    decoder=DecoderShape(num_layers=1, num_heads=1, head_dim=2, vocab_size=VOCAB, encoder_seq_len=3, max_positions=64),
    generation=GenerationDefaults(decoder_start_token_id=EOS, eos_token_id=EOS, pad_token_id=1, max_new_tokens=10),
    clean_up_tokenization_spaces=False,
)


class ScriptedStep:
    """Row r (identified by its cross_key_values value) emits script[r][position]; records every call."""

    def __init__(self, scripts: list[list[int]]):
        self.scripts = scripts
        self.calls: list[dict[str, np.ndarray]] = []

    def __call__(self, inputs):
        self.calls.append(inputs)
        rows = inputs[names.cross_inputs(1)[0]][:, 0, 0, 0].astype(int)
        position = int(inputs[names.POSITION_IDS][0, 0])
        log_probs = np.full((len(rows), VOCAB), -10.0, dtype=np.float32)
        for i, row in enumerate(rows):
            log_probs[i, self.scripts[row][position]] = -0.5
        # like decoder.onnx: each row continues its past row, this step's keys/values (its cross row's value and
        # the position) at its position
        past = inputs[names.PAST_KEY_VALUES][inputs[names.PAST_ROWS]][..., :position, :]
        new = np.full((len(rows), 1, 2, 1, 1, 2), position, dtype=np.float32) + rows[:, None, None, None, None, None]
        return log_probs, np.concatenate([past, new], axis=names.CACHE_SEQ_AXIS)


def cross_for(rows: int) -> np.ndarray:
    return np.arange(rows, dtype=np.float32).reshape(rows, 1, 1, 1, 1, 1) * np.ones((1, 1, 2, 1, 3, 2), np.float32)


def test_rows_stop_at_eos_or_their_own_limit():
    step = ScriptedStep([[5, 6, EOS, 7, 7], [4, 4, 4, 4, 4], [3, EOS, 7, 7, 7]])
    hypotheses = greedy_decode(cross_for(3), np.array([5, 3, 5]), CONFIG, step)
    assert [h.token_ids for h in hypotheses] == [[5, 6, EOS], [4, 4, 4], [3, EOS]]
    assert hypotheses[0].score == -0.5
    # a finished row leaves the batch at once: row 2 after its end-of-sequence at step 1, rows 0 and 1 after step 2
    assert [len(call[names.INPUT_IDS]) for call in step.calls] == [3, 3, 2]


def test_inputs_of_each_step():
    step = ScriptedStep([[5, 6, EOS]])
    greedy_decode(cross_for(1), np.array([10]), CONFIG, step)
    first, second, third = step.calls
    assert first[names.INPUT_IDS].tolist() == [[EOS]]  # the decoder start token
    assert second[names.INPUT_IDS].tolist() == [[5]] and third[names.INPUT_IDS].tolist() == [[6]]
    assert [c[names.POSITION_IDS].tolist() for c in step.calls] == [[[0]], [[1]], [[2]]]
    assert third[names.ATTENTION_MASK].tolist() == [[1, 1, 1]]
    assert third[names.PAST_KEY_VALUES].shape[names.CACHE_SEQ_AXIS] == 2
    # the cache carries what each step returned, in order
    assert third[names.PAST_KEY_VALUES][0, 0, 0, 0, :, 0].tolist() == [0.0, 1.0]


def test_rows_that_go_on_continue_their_own_caches_after_a_row_leaves():
    step = ScriptedStep([[EOS], [5, 6, EOS], [4, EOS]])
    greedy_decode(cross_for(3), np.array([5, 5, 5]), CONFIG, step)
    second, third = step.calls[1:]
    assert second[names.PAST_ROWS].tolist() == [1, 2]  # row 0 left: rows 1 and 2 of the first step's cache
    assert third[names.PAST_ROWS].tolist() == [0]  # row 2 left: row 1 is now the first row
    cache = third[names.PAST_KEY_VALUES][third[names.PAST_ROWS]]
    assert cache[0, 0, 0, 0, :, 0].tolist() == [1.0, 2.0]  # image 1's entries: positions 0 and 1, plus 1
