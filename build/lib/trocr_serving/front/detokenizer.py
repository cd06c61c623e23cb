"""Token ids -> text with the model's own tokenizer file, as `tokenizer.batch_decode(skip_special_tokens=True)`."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


def clean_up_tokenization(text: str) -> str:
    """The same replacements as transformers' `PreTrainedTokenizerBase.clean_up_tokenization`."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


class Detokenizer:
    def __init__(self, tokenizer_file: Path, clean_up_tokenization_spaces: bool):
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._clean_up = clean_up_tokenization_spaces

    def decode(self, token_ids: list[int]) -> str:
        text = self._tokenizer.decode(token_ids, skip_special_tokens=True)
        return clean_up_tokenization(text) if self._clean_up else text
