"""SIGTERM under DDP: every rank stops at the same batch.

Lightning's SIGTERM handler (pytorch-lightning 2.6) broadcasts from inside the handler, where that
collective pairs with whatever collective the other ranks are in at the moment (DDP's buffer
broadcast, the loss's token count), and its checks of the flag are per rank, so a rank that got the
signal can stop a batch before the others. A scheduler's SIGTERM reaches every rank (and Lightning
forwards rank 0's to its children once more), so a preempted job hung there instead of exiting.

:class:`StopTogether` replaces that handler while a multi-process fit runs: the handler only notes
the signal, and after each training batch the ranks agree (one all-reduce of one number, beside the
broadcast of one that Lightning makes every step) and all raise Lightning's ``SIGTERMException`` at that
batch, which ftexp reports as exit 143. A single process keeps Lightning's own handling.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class StopTogether(pl.Callback):
    def __init__(self) -> None:
        self._noted = False
        self._previous: Any = None
        self._installed = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning installs its handler after this hook and restores this one when fit ends.
        self._previous = signal.getsignal(signal.SIGTERM)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._noted = False
        self._installed = (trainer.world_size > 1 and dist.is_available() and dist.is_initialized()
                           and threading.current_thread() is threading.main_thread())
        if self._installed:
            signal.signal(signal.SIGTERM, self._note)
            self._rank = trainer.global_rank

    def _note(self, signum: int, frame: Any) -> None:
        log.info("[rank %d] received SIGTERM: every rank stops after this batch", self._rank)
        self._noted = True
        if callable(self._previous):  # a handler that was there before the fit (a launcher's), as Lightning does
            self._previous(signum, frame)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._installed:
            return
        flag = torch.tensor([1.0 if self._noted else 0.0], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            raise SIGTERMException()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._installed = False
