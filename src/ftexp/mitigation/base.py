"""The mitigation interface and ``mitigation=none``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch


@dataclass
class StageContext:
    """What a mitigation may look at around a stage."""

    index: int  # 1-based stage number (row k of the accuracy matrix)
    name: str
    model: torch.nn.Module
    datamodule: Any  # the stage's FineTuneDataModule (replay adds rows to it in before_stage)
    task: Any  # the stage's Task
    tokenizer: Any = None
    encode: Optional[Callable[[List[Any]], List[Dict[str, List[int]]]]] = None  # Examples -> training rows
    earlier: List[Any] = field(default_factory=list)  # the Tasks of earlier stages, in order
    seed: int = 0
    pretrained: bool = True  # whether the run's model started from pretrained weights (tiny: no)
    extras: Dict[str, Any] = field(default_factory=dict)


class Mitigation:
    """Hooks around each stage and on the training loss. The default does nothing.

    ``training_loss`` receives the task loss of one batch (and the model's outputs for it, with
    ``logits``) and returns the loss to optimise plus a dict of scalars to log (e.g. the penalty
    and its ratio to the task loss). It runs inside the training step, on every rank. Under DDP the task
    loss is this rank's share of the global batch's per-token mean (``global_token_weight``), and
    ``batch["token_weight"]`` the factor that made it so: a term that is a per-token mean too
    multiplies by it to count each token of the global batch once (see LwF). The logged scalars are
    averaged over the ranks.
    """

    def __init__(self, cfg: Optional[Any] = None) -> None:
        self.cfg = cfg

    def before_stage(self, ctx: StageContext) -> None:
        """Called before a stage trains (e.g. snapshot a teacher, fill a replay buffer)."""

    def training_loss(self, loss: torch.Tensor, batch: Dict[str, torch.Tensor], model: torch.nn.Module,
                      outputs: Any = None) -> Tuple[torch.Tensor, Dict[str, Any]]:
        return loss, {}

    def after_stage(self, ctx: StageContext) -> None:
        """Called after a stage trained (e.g. consolidate an EWC Fisher)."""

    def acts_on(self, ctx: StageContext) -> bool:
        """Whether this mitigation may change how the stage trains (called after ``before_stage``).
        A stage it leaves alone trains as under ``none``, so jobs of different arms share it (the
        stage cache). Mitigations act on what earlier stages left, so the first stage is untouched."""
        return bool(ctx.earlier)

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (for resume)."""


class NoMitigation(Mitigation):
    """``mitigation=none``: plain fine-tuning."""

    def acts_on(self, ctx: StageContext) -> bool:
        return False
