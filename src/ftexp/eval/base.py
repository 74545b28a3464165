"""The evaluator interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch


@dataclass
class EvalContext:
    """What every evaluator gets besides the model and the task."""

    tokenizer: Any
    max_length: int  # prompts are cut from the left to fit, as in training


class Evaluator:
    """Scores a model on one task; returns flat metrics such as ``{"test/accuracy": 0.9}``."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def applies_to(self, task: Any) -> bool:
        """Whether this evaluator can score ``task`` (e.g. classification needs labels)."""
        return True

    def evaluate(self, model: torch.nn.Module, task: Any, ctx: EvalContext) -> Dict[str, float]:
        raise NotImplementedError


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
