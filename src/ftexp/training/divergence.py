"""Stop a stage whose training loss became NaN or infinite, naming the stage, the step and the last
finite loss. The check costs no device sync per step: the first bad step and the last finite loss
are kept on the device and read on logging steps and at the end of each epoch, before the epoch's
checkpoint, so a checkpoint never holds diverged weights."""

from __future__ import annotations

from typing import Any, List, Optional

import pytorch_lightning as pl
import torch

from ftexp.errors import TrainingDiverged


class FiniteLoss(pl.Callback):
    def __init__(self, stage: str, lr: Optional[float] = None) -> None:
        self.stage, self.lr = stage, lr
        # Counted in batches of this fit (1-based); reported as the optimizer steps they belong to, which
        # differ under gradient accumulation: the global step before and after each batch (host ints).
        self.first_bad: Optional[torch.Tensor] = None  # the batch of the first non-finite loss, or -1
        self.last_good: Optional[torch.Tensor] = None  # (batch, loss) of the last finite loss before it
        self.batch: Optional[torch.Tensor] = None
        self.steps_before: List[int] = []
        self.steps_after: List[int] = []
        self.accumulate = 1
        self.clip: Optional[float] = None  # the run's clipping and precision, for advice that fits the run
        self.precision = "32-true"

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.steps_before.append(trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.steps_after.append(trainer.global_step)
        loss = outputs["loss"].detach() if isinstance(outputs, dict) else outputs.detach()
        if self.first_bad is None:  # device tensors: no host-to-device copy (an implicit sync) per step
            self.accumulate = max(1, int(trainer.accumulate_grad_batches))
            self.clip, self.precision = trainer.gradient_clip_val, str(trainer.precision)
            self.first_bad = torch.tensor(-1.0, device=loss.device)
            self.last_good = torch.tensor([-1.0, float("nan")], device=loss.device)
            self.batch = torch.tensor(0.0, device=loss.device)
        self.batch += 1.0
        finite = torch.isfinite(loss)
        self.first_bad = torch.where(~finite & (self.first_bad < 0), self.batch, self.first_bad)
        before_bad = finite & (self.first_bad < 0)  # the last finite loss before the divergence
        self.last_good = torch.where(before_bad, torch.stack([self.batch, loss.float()]), self.last_good)
        if (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0:
            self.check()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check()  # (callbacks run in order, and Lightning puts checkpointing last)

    def check(self) -> None:
        if self.first_bad is None or float(self.first_bad) < 0:
            return
        batch, loss = (float(x) for x in self.last_good)
        last = f"the last finite loss was {loss:.4g} at {self._at(batch)}" if batch >= 0 else "no step had a finite loss"
        raise TrainingDiverged(
            f"stage '{self.stage}': the training loss became NaN or infinite at {self._at(float(self.first_bad))} "
            f"of the stage; {last}. The stage stopped; earlier checkpoints are kept. {self.advice()}")

    def advice(self) -> str:
        """What to try, given what the run already does."""
        tries = [f"a lower learning rate{f' (it is {self.lr:g})' if self.lr is not None else ''}"]
        done = []
        if self.clip:
            done.append(f"gradient clipping (trainer.gradient_clip_val={self.clip:g})")
        else:
            tries.append("gradient clipping (trainer.gradient_clip_val=1.0)")
        if self.precision.startswith(("32", "64")):
            done.append(f"{self.precision.split('-')[0]}-bit precision")
        else:
            tries.append(f"trainer.precision=32-true (it is {self.precision})")
        text = "Try " + (", ".join(tries[:-1]) + " or " + tries[-1] if len(tries) > 1 else tries[0])
        return text + (f"; {' and '.join(done)} {'is' if len(done) == 1 else 'are'} on already" if done else "")

    def _at(self, batch: float) -> str:
        """'step S', or 'step S (batch B)' when several batches make one optimizer step."""
        b = int(batch) - 1
        before, after = self.steps_before[b], self.steps_after[b]
        step = f"step {after if after > before else before + 1}"  # the step this batch took or feeds
        return step if self.accumulate == 1 else f"{step} (batch {int(batch)})"
