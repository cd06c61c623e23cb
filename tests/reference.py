"""The reference: Hugging Face `generate()` on the same weights and images."""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from PIL import Image


@dataclass
class ReferenceOutput:
    token_ids: list[int]  # generated ids, end-of-sequence included
    token_log_probs: list[float]
    text: str

    @property
    def score(self) -> float:
        return sum(self.token_log_probs) / len(self.token_log_probs)


def pixel_values_of(processor, images: list[bytes]) -> torch.Tensor:
    pil = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
    return processor(images=pil, return_tensors="pt").pixel_values


def reference_generate(
    model, processor, images: list[bytes], max_new_tokens: int, num_beams: int = 1, **generate_kwargs
) -> list[ReferenceOutput]:
    """HF generate(); the score of a beam-search output is its raw log-probability sum / length."""
    with torch.no_grad():
        out = model.generate(
            pixel_values_of(processor, images),
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            **generate_kwargs,
        )
        if num_beams == 1:
            log_probs = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).tolist()
        else:
            log_probs = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices).tolist()
    eos = model.generation_config.eos_token_id
    results = []
    for sequence, row_log_probs in zip(out.sequences[:, 1:].tolist(), log_probs):
        length = sequence.index(eos) + 1 if eos in sequence else len(sequence)
        ids = sequence[:length]
        results.append(
            ReferenceOutput(ids, row_log_probs[:length], processor.batch_decode([ids], skip_special_tokens=True)[0])
        )
    return results
