"""Character and word error rates of transcriptions against references (rapidfuzz's Levenshtein distance), after
a stated normalisation.

CER = character edits (substitutions, insertions, deletions) over all lines / reference characters over all
lines; WER the same over words (whitespace-separated). An image the server failed counts as an empty hypothesis.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rapidfuzz.distance import Levenshtein


@dataclass(frozen=True)
class Normalisation:
    """Applied to references and hypotheses alike, in this order."""

    lowercase: bool = False
    strip_punctuation: bool = False  # Unicode categories P* (.,;:!?'"-()...)
    collapse_whitespace: bool = True  # runs of whitespace -> one space, none at the ends

    def apply(self, text: str) -> str:
        if self.lowercase:
            text = text.lower()
        if self.strip_punctuation:
            text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
        if self.collapse_whitespace:
            text = " ".join(text.split())
        return text

    def describe(self) -> str:
        return ", ".join(
            (
                "lowercased" if self.lowercase else "case-sensitive",
                "punctuation removed" if self.strip_punctuation else "punctuation kept",
                "whitespace collapsed" if self.collapse_whitespace else "whitespace as is",
            )
        )


@dataclass(frozen=True)
class LineScore:
    reference: str  # normalised
    hypothesis: str  # normalised ("" for a failed image)
    char_edits: int
    chars: int
    word_edits: int
    words: int

    @property
    def cer(self) -> float:
        return self.char_edits / max(self.chars, 1)


def score_line(reference: str, hypothesis: str, normalisation: Normalisation) -> LineScore:
    reference, hypothesis = normalisation.apply(reference), normalisation.apply(hypothesis)
    ref_words, hyp_words = reference.split(), hypothesis.split()
    return LineScore(
        reference=reference,
        hypothesis=hypothesis,
        char_edits=Levenshtein.distance(reference, hypothesis),
        chars=len(reference),
        word_edits=Levenshtein.distance(ref_words, hyp_words),
        words=len(ref_words),
    )


@dataclass(frozen=True)
class ErrorRates:
    cer: float
    wer: float
    char_edits: int
    chars: int
    word_edits: int
    words: int
    lines: int

    def as_dict(self) -> dict:
        return {**asdict(self), "cer": round(self.cer, 5), "wer": round(self.wer, 5)}


def error_rates(lines: Sequence[LineScore]) -> ErrorRates:
    char_edits, chars = sum(line.char_edits for line in lines), sum(line.chars for line in lines)
    word_edits, words = sum(line.word_edits for line in lines), sum(line.words for line in lines)
    return ErrorRates(
        cer=char_edits / max(chars, 1),
        wer=word_edits / max(words, 1),
        char_edits=char_edits,
        chars=chars,
        word_edits=word_edits,
        words=words,
        lines=len(lines),
    )


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str], normalisation=Normalisation()) -> float:
    return error_rates([score_line(r, h, normalisation) for r, h in zip(references, hypotheses, strict=True)]).cer
