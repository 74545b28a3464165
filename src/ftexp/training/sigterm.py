"""SIGTERM under DDP: every rank stops at the same point.

Lightning's SIGTERM handler (pytorch-lightning 2.6) broadcasts from inside the handler, where that
collective pairs with whatever collective the other ranks are in at the moment (DDP's buffer
broadcast, the loss's token count), and its checks of the flag are per rank, so a rank that got the
signal can stop a batch before the others. A scheduler's SIGTERM reaches every rank (and Lightning
forwards rank 0's to its children once more), so a preempted job hung there instead of exiting.

:class:`StopTogether` swaps that handler's notifier for one that only notes the signal, for the whole
of a multi-process fit (Lightning installs the handler after ``on_fit_start``, chains the handler that
was there before, and restores it when the fit ends). The ranks agree (one all-reduce of one number)
after each training batch, after each validation and when training ends, and all raise Lightning's
``SIGTERMException`` there, which ftexp reports as exit 143. A single process keeps Lightning's own
handling.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class StopTogether(pl.Callback):
    def __init__(self) -> None:
        self._noted = False
        self._active = False
        self._rank = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._noted = False
        self._active = trainer.world_size > 1
        if self._active:
            self._rank = trainer.global_rank
            # Looked up when Lightning registers its handler, right after this hook.
            trainer._signal_connector._sigterm_notifier_fn = self._note

    def _note(self, signum: int, frame: Any) -> None:
        log.info("[rank %d] received SIGTERM: every rank stops at the next check", self._rank)
        self._noted = True

    def _stop_if_any_rank_noted(self, trainer: pl.Trainer) -> None:
        """Called at the same point on every rank (a collective)."""
        if not (self._active and dist.is_available() and dist.is_initialized()):
            return
        flag = torch.tensor([1.0 if self._noted else 0.0], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            self._active = False  # raised once; what follows is teardown
            raise SIGTERMException()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._stop_if_any_rank_noted(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_any_rank_noted(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_any_rank_noted(trainer)  # a signal during the last validation or checkpoint

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._active = False  # Lightning's teardown puts the earlier handler back
