"""A Lightning Trainer for one stage, from ``trainer=`` and the stage's own settings."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, List, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint, ProgressBar

from ftexp.training import launch
from ftexp.training.best_weights import BestWeights
from ftexp.training.sigterm import StopTogether

# Lightning's info lines that no user acts on: the hardware it found (the run's config says what it uses) and
# how it counts the steps. Its warnings and other info lines still show.
_QUIET_INFO = ("GPU available:", "TPU available:", "HPU available:", "IPU available:", "LOCAL_RANK:",
               "Loading `train_dataloader` to estimate number of stepping batches")


class _QuietInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not str(record.msg).startswith(_QUIET_INFO)


def quiet_lightning() -> None:
    """Drop Lightning's noise that a user cannot act on (idempotent)."""
    # Lightning's own pytree helper builds a LeafSpec, which torch deprecates; nothing in ftexp uses it.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietInfo) for f in logger.filters):
            logger.addFilter(_QuietInfo())


class CurvePoints(Callback):
    """Log at least ``POINTS`` times a fit: a stage shorter than ``log_every_n_steps`` would log no
    ``train/loss`` at all (Lightning writes metrics on every n-th step only)."""

    POINTS = 5

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        steps = trainer.estimated_stepping_batches
        if steps != float("inf"):
            trainer.log_every_n_steps = max(1, min(trainer.log_every_n_steps, int(steps) // self.POINTS))


def build_trainer(cfg: Any, stage: Any, out_dir: Path, logger: Optional[Any], callbacks: List[Any] = (),
                  validate: bool = True, strategy: Optional[Any] = None) -> pl.Trainer:
    """``strategy``: a built Lightning strategy (FSDP's depends on the model) instead of ``cfg.strategy``.
    The fit shows a bar when ``callbacks`` hold one (:func:`ftexp.utils.progress.training_callbacks`)."""
    max_epochs = stage.max_epochs if stage.max_epochs is not None else cfg.max_epochs
    max_steps = stage.max_steps if stage.max_steps is not None else cfg.max_steps
    callbacks = [*callbacks, StopTogether(), CurvePoints()]
    quiet_lightning()
    launch.install()  # child ranks of a DDP job run that job, not the command line's sweep
    if validate and cfg.get("early_stopping_patience") is not None:
        callbacks += [EarlyStopping(monitor="val/loss", mode="min", patience=cfg.early_stopping_patience,
                                    min_delta=cfg.early_stopping_min_delta),
                      BestWeights(monitor="val/loss", min_delta=cfg.early_stopping_min_delta)]
    return pl.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy if strategy is not None else cfg.strategy,
        precision=cfg.precision,
        max_epochs=max_epochs,
        max_steps=max_steps,
        gradient_clip_val=cfg.gradient_clip_val or None,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        log_every_n_steps=cfg.log_every_n_steps,
        val_check_interval=cfg.val_check_interval,
        deterministic=cfg.deterministic,
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),  # resume's, if given
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        default_root_dir=str(out_dir),
        num_sanity_val_steps=0,
        limit_train_batches=cfg.get("limit_train_batches"),
        limit_val_batches=cfg.get("limit_val_batches") if validate else 0,
        use_distributed_sampler=False,  # the datamodule shards its own length-grouped batches by rank
    )
