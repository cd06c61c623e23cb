"""Error rates and normalisation (trocr_build.accuracy), and the side-by-side comparison of two runs."""

from __future__ import annotations

import pytest

from trocr_build.accuracy import Normalisation, character_error_rate, error_rates, score_line
from trocr_loadtest.evaluate import render_comparison, worst_lines


def test_cer_counts_substitutions_insertions_and_deletions_over_reference_characters():
    # "kitten" -> "sitting": 2 substitutions and 1 insertion over 6 characters
    assert character_error_rate(["kitten"], ["sitting"]) == pytest.approx(3 / 6)
    # corpus rate: edits and characters summed over lines, not a mean of per-line rates
    assert character_error_rate(["abcd", "ab"], ["abcd", "xy"]) == pytest.approx(2 / 6)


def test_wer_counts_word_edits_over_reference_words():
    line = score_line("the quick brown fox", "the quick brown box jumps", Normalisation())
    assert (line.word_edits, line.words) == (2, 4)  # one substitution, one insertion
    rates = error_rates([line, score_line("a b", "a b", Normalisation())])
    assert rates.wer == pytest.approx(2 / 6) and rates.lines == 2


def test_a_failed_image_counts_as_every_character_deleted():
    line = score_line("hello", "", Normalisation())
    assert line.cer == 1.0 and line.word_edits == 1


def test_normalisation_options_apply_to_both_sides_and_are_described():
    assert character_error_rate(["Hello World"], ["hello world"]) == pytest.approx(2 / 11)
    assert character_error_rate(["Hello World"], ["hello world"], Normalisation(lowercase=True)) == 0.0
    stripped = Normalisation(strip_punctuation=True)
    assert stripped.apply('"Stop," he said; (twice)!') == "Stop he said twice"
    assert Normalisation().apply("  two   spaces\tand tab ") == "two spaces and tab"
    assert Normalisation(collapse_whitespace=False).apply(" a  b") == " a  b"
    assert Normalisation().describe() == "case-sensitive, punctuation kept, whitespace collapsed"
    assert Normalisation(True, True, False).describe() == "lowercased, punctuation removed, whitespace as is"


def _report(label: str, hypotheses: list[str], lines_per_s: float) -> dict:
    references = ["one line", "two lines"]
    scores = [score_line(r, h, Normalisation()) for r, h in zip(references, hypotheses)]
    per_line = [
        {
            "path": f"{i}.png",
            "reference": s.reference,
            "hypothesis": s.hypothesis,
            "cer": s.cer,
            "char_edits": s.char_edits,
        }
        for i, s in enumerate(scores)
    ]
    rates = error_rates(scores).as_dict()
    return {
        "label": label,
        "set": "set.jsonl",
        "normalisation": {"lowercase": False},
        "failed": 0,
        "lines_per_s": lines_per_s,
        "per_line": per_line,
        **rates,
    }


def test_two_runs_side_by_side_with_the_differences():
    first, second = _report("fp32", ["one line", "two lines"], 10.0), _report("int8", ["one line", "two linez"], 16.0)
    table = render_comparison(first, second)
    assert "fp32" in table and "int8" in table
    assert "+5.88 points" in table  # CER 0% -> 1/17
    assert "1.60x" in table
    assert "lines transcribed differently: 1 of 2" in table
    assert [line["path"] for line in worst_lines(second, 5)] == ["1.png"]  # perfect lines are not listed


def test_runs_over_different_sets_are_not_compared():
    first, second = _report("a", ["one line", "two lines"], 1.0), _report("b", ["one line", "two lines"], 1.0)
    second["set"] = "other.jsonl"
    with pytest.raises(ValueError, match="differ in set"):
        render_comparison(first, second)
