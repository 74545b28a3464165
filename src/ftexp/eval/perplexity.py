"""``evaluator=perplexity``: token-weighted cross-entropy of the completions (for a text corpus,
every token) on a task's test split, and its exponential."""

from __future__ import annotations

import math
from typing import Any, Dict

import torch

from ftexp.data.base import encode_split
from ftexp.data.datamodule import pad_batch
from ftexp.eval.base import EvalContext, Evaluator, model_device


class PerplexityEvaluator(Evaluator):
    def applies_to(self, task: Any) -> bool:
        return task.kind in ("generation", "corpus")

    @torch.inference_mode()
    def evaluate(self, model: torch.nn.Module, task: Any, ctx: EvalContext) -> Dict[str, float]:
        split = self.cfg.split
        rows = encode_split(ctx.tokenizer, task.splits[split], ctx.max_length, task.completion_prefix,
                            chat=task.chat_template)
        device = model_device(model)
        was_training = model.training
        model.eval()
        total, tokens = 0.0, 0
        try:
            with self.track(task, ctx, len(rows), "examples") as work:
                for start in range(0, len(rows), self.cfg.batch_size):
                    batch = {k: v.to(device) for k, v in pad_batch(rows[start:start + self.cfg.batch_size],
                                                                   ctx.tokenizer.pad_token_id).items()}
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                    targets = batch["labels"][:, 1:]
                    nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets,
                                                            ignore_index=-100, reduction="sum")
                    total += float(nll)
                    tokens += int((targets != -100).sum())
                    work.advance(batch["input_ids"].shape[0])
        finally:
            model.train(was_training)
        loss = total / max(1, tokens)
        return {f"{split}/loss": loss, f"{split}/perplexity": math.exp(min(loss, 50.0)),
                f"{split}/tokens": float(tokens)}
