"""A byte-level BPE tokenizer of any vocabulary size, built locally (no download) for the random models.

Ids 0-3 are the special tokens TrOCR uses (<s>, <pad>, </s>, <unk>), then the 256 byte symbols, then
merged tokens ("ab", "Ġab", "abc", ...) until the vocabulary is full, so every id the model can emit decodes
to some text.
"""

from __future__ import annotations

import itertools
import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.pre_tokenizers import ByteLevel

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")


def build_tokenizer(vocab_size: int) -> Tokenizer:
    alphabet = ByteLevel.alphabet()
    alphabet.sort()
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *alphabet):
        vocab[token] = len(vocab)
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(vocab)} base symbols")
    merges: list[tuple[str, str]] = []
    letters = string.ascii_lowercase + string.ascii_uppercase + string.digits
    firsts = "Ġ" + letters  # "Ġ" is the byte-level symbol for a leading space
    pairs = ((a, b) for a, b in itertools.product(firsts, letters))
    triples = ((a + b, c) for (a, b), c in itertools.product(itertools.product(firsts, letters), letters))
    for left, right in itertools.chain(pairs, triples):
        if len(vocab) >= vocab_size:
            break
        vocab[left + right] = len(vocab)
        merges.append((left, right))
    if len(vocab) < vocab_size:
        raise ValueError(f"cannot build a vocabulary of {vocab_size} tokens")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer
