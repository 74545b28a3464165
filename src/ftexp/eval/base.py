"""The evaluator interface.

An evaluator scores the model on the run's tasks after row 0 and after every stage (``rows: all``)
or after the last stage only (``rows: last``). Task-scoped evaluators (``scope = "task"``) are called
once per task they apply to; model-scoped ones (``scope = "model"``, e.g. lm-evaluation-harness)
once per row, their metrics filed under the evaluator's own name. Evaluators that produce text
(answers, predicted labels) also leave one :class:`Output` per example in ``ctx.outputs``, which
``evaluator=human_review`` exports after the last row through :meth:`Evaluator.finish`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ftexp.utils import progress


@dataclass
class Output:
    """One model output on one prompt, kept for human review."""

    id: str  # stable across runs of the same data: "<task>/<split>/<index>" or "<task>/red_team/<index>"
    task: str
    prompt: str
    output: str
    reference: Optional[str] = None  # None for red-team prompts without a reference answer
    scores: Dict[str, float] = field(default_factory=dict)  # automated scores of this output (rougeL, bleu, ...)
    auto_correct: Optional[bool] = None  # the automated verdict (exact label, ROUGE-L over a threshold ...)
    red_team: bool = False
    slices: List[str] = field(default_factory=list)  # test slices the example belongs to


@dataclass
class EvalContext:
    """What every evaluator gets besides the model and the task."""

    tokenizer: Any
    max_length: int  # prompts are cut from the left to fit, as in training
    seed: int = 0  # the run's seed (sampling, shuffles)
    row: int = 0  # the row being evaluated: 0 = before training, k = after stage k
    last_row: bool = True  # whether this is the run's last row
    pretrained: bool = True  # the model came with pretrained weights (hub / local path)
    device_name: str = "cpu"  # e.g. "cpu" or "cuda:NVIDIA H100 80GB HBM3"
    stages: List[Dict[str, Any]] = field(default_factory=list)  # training summaries of the stages so far
    outputs: Dict[str, List[Output]] = field(default_factory=dict)  # task -> outputs of the current row


class Evaluator:
    """Scores a model on one task; returns flat metrics such as ``{"test/accuracy": 0.9}``."""

    scope = "task"  # "task": called per task it applies to | "model": once per row, for the model alone
    # Whether its metrics are a function of the weights, the data and its settings alone, so that jobs
    # share them through the row cache (eval/row_cache.py); not so for measurements of the machine.
    cacheable = True

    @property
    def uses_seed(self) -> bool:
        """Whether its results depend on the run's seed (``ctx.seed``), e.g. sampled answers."""
        return False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.name = type(self).__name__  # the run sets its key in `evaluator` (e.g. "generation")

    def runs_on(self, ctx: EvalContext) -> bool:
        """Whether this row is evaluated (``rows: all`` or ``rows: last``)."""
        return getattr(self.cfg, "rows", "all") == "all" or ctx.last_row

    def applies_to(self, task: Any) -> bool:
        """Whether this evaluator can score ``task`` (e.g. classification needs labels)."""
        return True

    def evaluate(self, model: torch.nn.Module, task: Any, ctx: EvalContext) -> Dict[str, float]:
        raise NotImplementedError

    def track(self, task: Any, ctx: EvalContext, total: Optional[int], unit: str):
        """This evaluator's work on ``task`` in this row, shown as it goes (:mod:`ftexp.utils.progress`)."""
        return progress.track(f"row {ctx.row} · {self.name} · {getattr(task, 'name', 'model')}", total, unit)

    def finish(self, ctx: EvalContext, run_dir: Path, tracker: Any = None) -> Optional[Dict[str, Any]]:
        """After the last row, on rank 0: write files, return what results.json records under
        ``evaluators.<name>`` (None = nothing)."""
        return None


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
