"""Batched decoding with a KV cache, greedy or sampled, where every sample depends only on its own
seed and prompt.

Sampling runs ``generate`` greedily over logits that a processor has tempered, top-p filtered and
perturbed with Gumbel noise drawn from a per-row generator: the argmax of ``logits / T + Gumbel``
is an exact sample from ``softmax(logits / T)``. So sample *k* is the same whatever else shares
its batch — a cache of generated examples can be extended later and still equal a fresh run, and an
evaluation gives the same answers at any batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class SeededSampling(LogitsProcessor):
    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device) -> None:
        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / max(self.temperature, 1e-6)
        if self.top_p < 1.0:
            probs = torch.softmax(scores, -1)
            sorted_probs, order = probs.sort(-1, descending=True)
            # drop a token when the tokens ranked above it already hold top_p of the mass
            drop_sorted = sorted_probs.cumsum(-1) - sorted_probs > self.top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_(1e-10, 1.0 - 1e-7)))
        return scores + gumbel


def left_pad(rows: Sequence[List[int]], pad_id: int, device) -> dict:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@dataclass(frozen=True)
class Decoding:
    """How to decode: up to ``max_new_tokens`` per prompt, ``batch_size`` prompts at a time. A sampled
    row (one with a seed) is tempered by ``temperature`` and cut to the ``top_p`` mass; a row ends at
    the first token that holds ``stop`` (None: only at EOS)."""

    max_new_tokens: int
    batch_size: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: Optional[str] = None


@torch.inference_mode()
def generate_ids(model, tokenizer, prompts: Sequence[List[int]], how: Decoding, seeds: Optional[Sequence[int]] = None,
                 progress: Optional[Callable[[int], None]] = None) -> List[List[int]]:
    """The new token ids for each prompt (token ids), batched and left-padded, EOS and padding cut
    off. ``seeds`` None decodes greedily; else row i is sampled with ``seeds[i]``. A row that ends at
    ``how.stop`` keeps the token that holds it (the caller cuts its text)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stop_ids = tokens_containing(tokenizer, how.stop) if how.stop else ()
    out: List[List[int]] = []
    try:
        for start in range(0, len(prompts), how.batch_size):
            chunk = prompts[start:start + how.batch_size]
            enc = left_pad(chunk, pad, device)
            processors = LogitsProcessorList()
            if seeds is not None:
                processors.append(SeededSampling(seeds[start:start + how.batch_size], how.temperature, how.top_p,
                                                 device))
            ids = model.generate(
                **enc, do_sample=False, num_beams=1, use_cache=True, max_new_tokens=how.max_new_tokens,
                logits_processor=processors, pad_token_id=pad, eos_token_id=[eos, *stop_ids],
                temperature=None, top_p=None, top_k=None,
            )
            for row in ids[:, enc["input_ids"].shape[1]:].tolist():
                out.append(_cut(row, eos, set(stop_ids)))
            if progress:
                progress(len(chunk))
    finally:
        model.train(was_training)
    return out


def _cut(row: List[int], eos: int, stop: set) -> List[int]:
    for i, token in enumerate(row):
        if token == eos:
            return row[:i]
        if token in stop:
            return row[:i + 1]
    return row


def tokens_containing(tokenizer, text: str) -> List[int]:
    """Ids of the vocabulary's tokens whose text contains ``text`` (e.g. every token with a line break)."""
    return [i for token, i in tokenizer.get_vocab().items() if text in tokenizer.convert_tokens_to_string([token])]


def sample(model, tokenizer, prompts: List[str], seeds: List[int], how: Decoding,
           progress: Optional[Callable[[int], None]] = None) -> List[str]:
    """One sampled continuation per text prompt (decoded, cut at ``how.stop``). Decoding of a row ends
    at the first token that holds ``stop``: the text before it is the same, and a one-line example no
    longer costs max_new_tokens steps."""
    encoded = tokenizer(list(prompts))["input_ids"]
    texts = tokenizer.batch_decode(generate_ids(model, tokenizer, encoded, how, seeds, progress),
                                   skip_special_tokens=True)
    return [t.split(how.stop)[0] if how.stop else t for t in texts]
