"""Batched sampling where every sample depends only on its own seed and prompt.

``generate`` is run greedily over logits that a processor has tempered, top-p filtered and
perturbed with Gumbel noise drawn from a per-row generator: the argmax of ``logits / T + Gumbel``
is an exact sample from ``softmax(logits / T)``. So sample *k* of a label is the same whatever
else shares its batch — a cache of generated examples can be extended later and still equal what
a fresh run would produce.
"""

from __future__ import annotations

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


@torch.inference_mode()
def sample(model, tokenizer, prompts: List[str], seeds: List[int], max_new_tokens: int, temperature: float,
           top_p: float, batch_size: int, stop: Optional[str] = "\n",
           progress: Optional[Callable[[int], None]] = None) -> List[str]:
    """One continuation per prompt (decoded, cut at ``stop``), batched, left-padded."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: List[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk, chunk_seeds = prompts[start:start + batch_size], seeds[start:start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            ids = model.generate(
                **enc,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                logits_processor=LogitsProcessorList([SeededSampling(chunk_seeds, temperature, top_p, device)]),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                temperature=None, top_p=None, top_k=None,
            )
            for text in tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True):
                out.append(text.split(stop)[0] if stop else text)
            if progress:
                progress(len(chunk))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out
