"""The one LightningModule: causal-LM loss on completion tokens, AdamW, warm-up + cosine."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import pytorch_lightning as pl
import torch

from ftexp.mitigation.base import Mitigation, NoMitigation


def completion_loss(model: torch.nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token cross-entropy over completion tokens (labels != -100) of the batch."""
    return forward(model, batch).loss


def forward(model: torch.nn.Module, batch: Dict[str, torch.Tensor]):
    """The model's outputs for a batch, with ``loss`` = mean cross-entropy over the target tokens."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class FineTuneModule(pl.LightningModule):
    def __init__(
        self,
        model: torch.nn.Module,
        optim_cfg: Any,
        lr: float,
        mitigation: Optional[Mitigation] = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim_cfg = optim_cfg
        self.lr = lr
        self.mitigation = mitigation or NoMitigation()
        self._window_loss: Any = 0.0  # sum of train losses since the last logged step
        self._window_batches = 0
        self._window_end = 0  # global step at which the current window began

    def forward(self, **batch):
        return self.model(**batch)

    def on_fit_start(self) -> None:
        # from_pretrained and the evaluators leave the model in eval mode; Lightning keeps the mode
        # it finds, and dropout (e.g. LoRA's) must be on while training.
        self.model.train()

    # ----------------------------------------------------------------------------- steps

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        outputs = forward(self.model, batch)
        task_loss = outputs.loss
        loss, extra = self.mitigation.training_loss(task_loss, batch, self.model, outputs)
        self._window_loss = self._window_loss + task_loss.detach()
        self._window_batches += 1
        # Each self.log costs about a millisecond on CPU (Lightning walks its result objects), so
        # metrics go out only on the steps the logger writes: train/loss is the mean over the window.
        if (self.trainer.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            bs = batch["input_ids"].shape[0]
            self.log("train/loss", self._window_loss / self._window_batches, prog_bar=True, batch_size=bs)
            self.log("lr", self.lr_schedulers().get_last_lr()[0], batch_size=bs)
            if loss is not task_loss:
                self.log("train/total_loss", loss, batch_size=bs)
            for name, value in extra.items():
                self.log(f"mitigation/{name}", value, batch_size=bs)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A new window starts once the optimiser step that was logged has been taken (with gradient
        # accumulation every micro-batch of that step is in the window).
        step = self.trainer.global_step
        if step != self._window_end and step % max(1, self.trainer.log_every_n_steps) == 0:
            self._window_loss, self._window_batches, self._window_end = 0.0, 0, step

    def validation_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> None:
        # Weighted by completion tokens, so val/loss is the per-token loss over the whole split.
        n = int((batch["labels"][:, 1:] != -100).sum())
        self.log("val/loss", completion_loss(self.model, batch), prog_bar=True, batch_size=n, sync_dist=True)

    # ------------------------------------------------------------------------- optimiser

    def configure_optimizers(self):
        cfg = self.optim_cfg
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=tuple(cfg.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(round(cfg.warmup_ratio * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, cfg.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
