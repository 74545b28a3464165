"""The mitigation interface and ``mitigation=none``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

# Given parameter names, the gradients the optimizer will step with for them (see Mitigation.gradient_term)
GradientsOf = Callable[[List[str]], List[torch.Tensor]]


@dataclass
class StageContext:
    """What a mitigation may look at around a stage."""

    index: int  # 1-based stage number (row k of the accuracy matrix)
    name: str
    model: torch.nn.Module
    datamodule: Any  # the stage's FineTuneDataModule (a mitigation may install how batches are drawn: replay)
    task: Any  # the stage's Task
    tokenizer: Any = None
    encode: Optional[Callable[[List[Any]], List[Dict[str, List[int]]]]] = None  # Examples -> training rows
    earlier: List[Any] = field(default_factory=list)  # the Tasks of earlier stages, in order
    seed: int = 0
    pretrained: bool = True  # whether the run's model started from pretrained weights (tiny: no)
    last: bool = False  # the run's last stage: nothing trains after it
    extras: Dict[str, Any] = field(default_factory=dict)


class Mitigation:
    """Hooks around each stage, on the training loss and on the gradient of each optimizer step. The
    default does nothing.

    ``training_loss`` receives the task loss of one batch (and the model's outputs for it, with
    ``logits``) and returns the loss to optimise plus a dict of scalars to log (e.g. the penalty
    and its ratio to the task loss). It runs inside the training step, on every rank. Under DDP the task
    loss is this rank's share of the global batch's per-token mean (``global_token_weight``), and
    ``batch["token_weight"]`` the factor that made it so: a term that is a per-token mean too
    multiplies by it to count each token of the global batch once (see LwF). The logged scalars are
    averaged over the ranks.

    ``gradient_term`` adds a term straight to the gradients, for a penalty whose gradient is known in
    closed form (EWC's): in the loss it would cost a backward pass over every weight it touches, per
    micro-batch.
    """

    def __init__(self, cfg: Optional[Any] = None) -> None:
        self.cfg = cfg

    def before_stage(self, ctx: StageContext) -> None:
        """Called before a stage trains (e.g. snapshot a teacher, fill a replay buffer)."""

    def training_loss(self, loss: torch.Tensor, batch: Dict[str, torch.Tensor], model: torch.nn.Module,
                      outputs: Any = None) -> Tuple[torch.Tensor, Dict[str, Any]]:
        return loss, {}

    def gradient_term(self, model: torch.nn.Module, gradients_of: GradientsOf, logged: bool = True) -> Dict[str, Any]:
        """Add a term to the gradients of the step; return scalars to log (only needed where ``logged``:
        the logger writes this step's metrics). Called once per optimizer step, on every rank, under
        ``torch.no_grad()``: after the backward of the step's last micro-batch, so the gradients of all
        its micro-batches are summed (and under DDP averaged over the ranks: a term must be the same on
        every rank), and before they are clipped, so clipping sees the whole gradient.
        ``gradients_of(names)`` gives the tensors to add into in place for those of ``model``'s parameters:
        the gradients the optimizer steps with (the parameters' ``.grad``, or under
        ``trainer.master_weights`` their fp32 copies'), unscaled, zeros where a parameter had none. Not
        for FSDP, whose parameters are flat shards (the config refuses EWC there)."""
        return {}

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
