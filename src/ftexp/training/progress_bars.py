"""A fit's progress, as :mod:`ftexp.utils.progress` shows long work: a Rich bar in a terminal, plain
log lines without one (:func:`ftexp.utils.progress.training_callbacks` picks)."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, RichProgressBar
from rich.markup import escape

from ftexp.utils.progress import Work


class StageBar(RichProgressBar):
    """Lightning's Rich bar, titled with what trains (``stage 2 · law · epoch 1/3``) instead of
    ``Epoch 0/0``, without the logger's version (``v_num``)."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title

    def _get_train_description(self, current_epoch: int) -> str:  # Lightning's hook for the bar's text
        return escape(f"{self.title} · {epoch_text(self.trainer, current_epoch)}")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class LogProgress(Callback):
    """Without a terminal: a log line every ``progress.every_s`` seconds of training (batches done of
    all, time left, epoch, the last logged losses) and of validation."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.train: Optional[Work] = None
        self.val: Optional[Work] = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train = Work(f"{self.title} · training", total_batches(trainer), "batches")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.train is None:
            return
        per_epoch = trainer.num_training_batches
        done = trainer.current_epoch * per_epoch + batch_idx + 1 if math.isfinite(per_epoch) else batch_idx + 1
        shown = {k: v for k, v in trainer.progress_bar_metrics.items() if k != "v_num"}
        note = ", ".join([epoch_text(trainer, trainer.current_epoch)]
                         + [f"{k} {float(v):.4g}" for k, v in shown.items()])
        self.train.update(done, note)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.train is not None:
            self.train.close()
            self.train = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            total = sum(n for n in trainer.num_val_batches if math.isfinite(n)) or None
            self.val = Work(f"{self.title} · validation", total, "batches")

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.val is not None:
            self.val.advance()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.val is not None:
            self.val.close()
            self.val = None


def epoch_text(trainer: pl.Trainer, epoch: int) -> str:
    """``epoch 1/3`` (1-based), or ``epoch 1`` when steps, not epochs, end the fit."""
    epochs = trainer.max_epochs
    return f"epoch {epoch + 1}/{epochs}" if epochs is not None and epochs > 0 else f"epoch {epoch + 1}"


def total_batches(trainer: pl.Trainer) -> Optional[int]:
    """The fit's training batches: epochs x batches per epoch, capped by ``max_steps`` (None: unknown)."""
    per_epoch, epochs = trainer.num_training_batches, trainer.max_epochs
    total = per_epoch * epochs if math.isfinite(per_epoch) and epochs is not None and epochs > 0 else math.inf
    if trainer.max_steps is not None and trainer.max_steps > 0:
        total = min(total, trainer.max_steps * trainer.accumulate_grad_batches)
    return int(total) if math.isfinite(total) else None
