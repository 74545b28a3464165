"""Stop a stage whose training loss became NaN or infinite, naming the stage, the step and the last
finite loss. The check costs no device sync per step: the first bad step and the last finite loss
are kept on the device and read on logging steps and at the end of each epoch, before the epoch's
checkpoint, so a checkpoint never holds diverged weights."""

from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl
import torch

from ftexp.errors import TrainingDiverged


class FiniteLoss(pl.Callback):
    def __init__(self, stage: str, lr: Optional[float] = None) -> None:
        self.stage, self.lr = stage, lr
        self.first_bad: Optional[torch.Tensor] = None  # the stage's step of the first non-finite loss, or -1
        self.last_good: Optional[torch.Tensor] = None  # (step, loss) of the latest finite loss
        self.step: Optional[torch.Tensor] = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"].detach() if isinstance(outputs, dict) else outputs.detach()
        if self.first_bad is None:  # device tensors: no host-to-device copy (an implicit sync) per step
            self.first_bad = torch.tensor(-1.0, device=loss.device)
            self.last_good = torch.tensor([-1.0, float("nan")], device=loss.device)
            self.step = torch.tensor(float(trainer.global_step) - 1.0, device=loss.device)
        self.step += 1.0  # 1-based: this batch's step of the stage
        finite = torch.isfinite(loss)
        self.first_bad = torch.where(~finite & (self.first_bad < 0), self.step, self.first_bad)
        self.last_good = torch.where(finite, torch.stack([self.step, loss.float()]), self.last_good)
        if (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0:
            self.check()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check()  # (callbacks run in order, and Lightning puts checkpointing last)

    def check(self) -> None:
        if self.first_bad is None or float(self.first_bad) < 0:
            return
        step, loss = (float(x) for x in self.last_good)
        last = f"the last finite loss was {loss:.4g} at step {int(step)}" if step >= 0 else "no step had a finite loss"
        raise TrainingDiverged(
            f"stage '{self.stage}': the training loss became NaN or infinite at step {int(self.first_bad)} of the "
            f"stage; {last}. The stage stopped; earlier checkpoints are kept. Try a lower "
            f"learning rate{f' (it is {self.lr:g})' if self.lr is not None else ''}, gradient clipping "
            f"(trainer.gradient_clip_val) or precision=32-true")
