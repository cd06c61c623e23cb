"""Per-image search state machines: greedy and beam search, with Hugging Face `generate()` semantics.

Each consumes the decoder's candidates for its own rows at every step (the top `candidates_needed()`
log-probabilities of each row and their token ids, best first) and says which token each row takes next,
which row's cache it continues (beam search reorders beams), and whether it is done. The candidates hold
every token the full vocabulary would have chosen: greedy needs the best token that is not banned, beam
search the best 2 x num_beams continuations per beam that are not banned. The scheduler batches the rows of
all images into one decoder call; these classes never see the batch.

Beam search follows transformers 4.57 `GenerationMixin._beam_search` for one input: top 2k continuations
of the accumulated log-probabilities, finished hypotheses scored with `length_penalty`, the
`early_stopping` heuristic (True, False or "never"), and the `no_repeat_ngram_size` processor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEG_INF_SCORE = np.float32(-1.0e9)  # the value transformers adds to rule a candidate out


@dataclass(frozen=True)
class SearchResult:
    token_ids: list[int]  # generated ids, end-of-sequence included when generated
    score: float  # mean log-probability of the generated tokens


@dataclass(frozen=True)
class SearchParams:
    max_new_tokens: int
    eos_token_id: int
    decoder_start_token_id: int
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    no_repeat_ngram_size: int = 0
    ignore_eos: bool = False  # benchmarks only: always generate exactly max_new_tokens


def banned_tokens(sequence: list[int], size: int) -> list[int]:
    """transformers' NoRepeatNGramLogitsProcessor: the tokens that would repeat an n-gram of `size`."""
    if size <= 0 or len(sequence) + 1 < size:
        return []
    prefix = tuple(sequence[len(sequence) - size + 1 :])
    return [
        sequence[i + size - 1] for i in range(len(sequence) - size + 1) if tuple(sequence[i : i + size - 1]) == prefix
    ]


def ban_repeated_ngrams(values: np.ndarray, ids: np.ndarray, sequences: list[list[int]], size: int) -> np.ndarray:
    """The candidates' log-probabilities with those of banned tokens set to -inf (a copy when any is banned)."""
    out = values
    for row, sequence in enumerate(sequences):
        banned = banned_tokens(sequence, size)
        if banned:
            out = out.copy() if out is values else out
            out[row, np.isin(ids[row], banned)] = -np.inf
    return out


class GreedySearch:
    width = 1

    def __init__(self, params: SearchParams):
        self.params = params
        self.sequence = [params.decoder_start_token_id]
        self.log_probs: list[float] = []

    def candidates_needed(self) -> int:
        return 1 + len(banned_tokens(self.sequence, self.params.no_repeat_ngram_size))

    def step(self, values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        scores = ban_repeated_ngrams(values, ids, [self.sequence], self.params.no_repeat_ngram_size)
        best = int(np.argmax(scores[0]))  # the first of equal values: the lowest token id
        token = int(ids[0, best])
        self.sequence.append(token)
        self.log_probs.append(float(values[0, best]))
        generated = len(self.sequence) - 1
        done = generated >= self.params.max_new_tokens or (
            token == self.params.eos_token_id and not self.params.ignore_eos
        )
        return np.array([token]), np.array([0]), done

    def result(self) -> SearchResult:
        return SearchResult(self.sequence[1:], float(np.mean(self.log_probs)))


class BeamSearch:
    def __init__(self, params: SearchParams):
        self.params = params
        k = self.width = params.num_beams
        self.keep = 2 * k  # one end-of-sequence token: max(2, 1 + 1) * num_beams
        self.running = [[params.decoder_start_token_id] for _ in range(k)]
        self.running_scores = np.full(k, NEG_INF_SCORE, dtype=np.float32)
        self.running_scores[0] = 0.0
        self.finished: list[list[int]] = [[] for _ in range(k)]
        self.finished_scores = np.full(k, NEG_INF_SCORE, dtype=np.float32)  # length-penalised
        self.finished_sums = np.zeros(k, dtype=np.float32)  # raw log-probability sums
        self.is_finished = np.zeros(k, dtype=bool)
        self.improvable = True
        self.cur_len = 1  # the decoder start token
        self.max_length = 1 + params.max_new_tokens

    def candidates_needed(self) -> int:
        size = self.params.no_repeat_ngram_size
        return self.keep + max(len(banned_tokens(sequence, size)) for sequence in self.running)

    def step(self, values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        p, k = self.params, self.width
        processed = ban_repeated_ngrams(values, ids, self.running, p.no_repeat_ngram_size)
        scores = (processed + self.running_scores[:, None]).reshape(-1)
        beams, tokens = np.repeat(np.arange(k), ids.shape[1]), ids.reshape(-1)
        # The best 2k by score, equal scores by (beam, token): transformers' stable argsort over beams x vocab.
        top = np.lexsort((tokens, beams, -scores))[: self.keep]
        top_scores, top_beams, top_tokens = scores[top], beams[top], tokens[top]
        top_sequences = [self.running[b] + [int(t)] for b, t in zip(top_beams, top_tokens)]
        hits = np.full(self.keep, self.cur_len + 1 >= self.max_length)
        if not p.ignore_eos:
            hits |= top_tokens == p.eos_token_id

        # running beams for the next step: the best k that did not just finish
        running_candidates = top_scores + hits.astype(np.float32) * NEG_INF_SCORE
        chosen = np.argsort(-running_candidates, kind="stable")[:k]
        parents = top_beams[chosen]
        self.running = [top_sequences[i] for i in chosen]
        self.running_scores = running_candidates[chosen].astype(np.float32)

        # finished hypotheses: merge the new ones (only from the top k) with the kept ones
        just_finished = hits & (np.arange(self.keep) < k)
        penalised = (top_scores / np.float32((self.cur_len + 1 - 1) ** p.length_penalty)).astype(np.float32)
        if self.is_finished.all() and p.early_stopping is True:
            penalised = penalised + NEG_INF_SCORE
        if not self.improvable:
            penalised = penalised + NEG_INF_SCORE
        penalised = penalised + (~just_finished).astype(np.float32) * NEG_INF_SCORE
        merged_scores = np.concatenate([self.finished_scores, penalised])
        merged_sequences = self.finished + top_sequences
        merged_sums = np.concatenate([self.finished_sums, top_scores])
        merged_finished = np.concatenate([self.is_finished, just_finished])
        best = np.argsort(-merged_scores, kind="stable")[:k]
        self.finished = [merged_sequences[i] for i in best]
        self.finished_scores = merged_scores[best]
        self.finished_sums = merged_sums[best]
        self.is_finished = merged_finished[best]

        self.cur_len += 1
        self._update_improvable()
        done = not self.improvable or (self.is_finished.all() and p.early_stopping is True) or bool(hits.all())
        tokens = np.array([seq[-1] for seq in self.running])
        return tokens, parents, done

    def _update_improvable(self) -> None:
        p = self.params
        if p.early_stopping == "never" and p.length_penalty > 0.0:
            best_length = self.max_length - 1
        else:
            best_length = self.cur_len - 1
        best_running = self.running_scores[0] / np.float32(best_length**p.length_penalty)
        worst_finished = np.where(self.is_finished, self.finished_scores.min(), NEG_INF_SCORE)
        self.improvable = self.improvable and bool(np.any(best_running > worst_finished))

    def result(self) -> SearchResult:
        tokens = self.finished[0][1:]
        return SearchResult(tokens, float(self.finished_sums[0]) / max(1, len(tokens)))


def new_search(params: SearchParams) -> GreedySearch | BeamSearch:
    return BeamSearch(params) if params.num_beams > 1 else GreedySearch(params)
