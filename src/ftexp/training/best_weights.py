"""Keep the trainable weights of the best validation check and put them back when the stage ends."""

from __future__ import annotations

from typing import Any, Dict, Optional

import pytorch_lightning as pl
import torch


class BestWeights(pl.Callback):
    """A CPU copy of the trainable parameters (all of them for full fine-tuning, the adapter for
    LoRA) at the lowest ``monitor``; restored at the end of fit, so early stopping's patience
    epochs past the best do not stay in the model."""

    def __init__(self, monitor: str = "val/loss", min_delta: float = 0.0) -> None:
        self.monitor, self.min_delta = monitor, min_delta
        self.best: Optional[float] = None
        self.best_step: Optional[int] = None
        self._state: Dict[str, torch.Tensor] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.best_step = value, trainer.global_step
            self._state = {n: p.detach().to("cpu", copy=True) for n, p in pl_module.named_parameters()
                           if p.requires_grad}

    def state_dict(self) -> Dict[str, Any]:  # in Lightning's checkpoints, for resume
        return {"best": self.best, "best_step": self.best_step, "weights": self._state}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.best_step, self._state = state["best"], state["best_step"], dict(state["weights"])

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._state:
            return
        with torch.no_grad():
            for name, param in pl_module.named_parameters():
                if name in self._state:
                    param.copy_(self._state[name].to(param.device))
        trainer.callback_metrics[self.monitor] = torch.tensor(self.best)
        self._state = {}
