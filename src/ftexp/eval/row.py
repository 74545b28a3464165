"""One row of a run: every evaluator that runs on it, on every task it applies to."""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from ftexp.data.base import Task
from ftexp.eval.base import EvalContext, Evaluator
from ftexp.eval.row_cache import RowCache


@dataclass
class RowEvaluator:
    """The run's tasks and evaluators, on the device they are scored on."""

    tasks: Dict[str, Task]
    evaluators: List[Evaluator]
    device: torch.device
    precision: str  # the trainer's: bf16 precisions score under bf16 autocast on a GPU
    cache: Optional[RowCache] = None  # scores of earlier jobs with the same weights and data
    limit: Optional[int] = None  # limit_eval_examples: the first this many examples of each split scored

    def __post_init__(self) -> None:
        # The evaluators see the capped tasks only (so does the row cache's key, which hashes their examples);
        # training keeps the whole tasks.
        if self.limit is not None:
            self.tasks = {name: first_examples(task, self.limit) for name, task in self.tasks.items()}

    def evaluate(self, model: torch.nn.Module, ctx: EvalContext) -> Dict[str, Dict[str, float]]:
        """``{task: {metric: value}}``; model-scoped evaluators (lm-evaluation-harness) file their
        metrics under their own name. Scores that the cache holds for these weights and data are reused."""
        cache = self.cache or RowCache(None)
        model.to(self.device)
        ctx.outputs = {}
        active = [e for e in self.evaluators if e.runs_on(ctx)]
        row: Dict[str, Dict[str, float]] = {}
        with self._autocast():
            for name, task in self.tasks.items():
                for evaluator in active:
                    if evaluator.scope == "task" and evaluator.applies_to(task):
                        row.setdefault(name, {}).update(cache.evaluate(evaluator, model, task, ctx))
            for evaluator in active:
                if evaluator.scope == "model":
                    prefix = f"{evaluator.name}/"  # filed under the name already: lm_eval/arc_easy/acc
                    metrics = {k[len(prefix):] if k.startswith(prefix) else k: v
                               for k, v in cache.evaluate(evaluator, model, None, ctx).items()}
                    if metrics:
                        row.setdefault(evaluator.name, {}).update(metrics)
        return row

    def _autocast(self):
        if self.device.type == "cuda" and self.precision.startswith("bf16"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


def first_examples(task: Task, n: int) -> Task:
    """A copy of ``task`` whose splits but train, and red-team prompts, keep their first ``n`` examples."""
    capped = copy.copy(task)
    capped.splits = {k: v if k == "train" else v[:n] for k, v in task.splits.items()}
    capped.red_team = task.red_team[:n]
    capped.slices = {name: [i for i in idx if i < n] for name, idx in task.slices.items()}  # test indices
    return capped
