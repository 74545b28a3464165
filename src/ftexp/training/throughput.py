"""Tokens per second during training: logged every few steps and summed over the stage."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import pytorch_lightning as pl

from ftexp.data.packing import real_tokens
from ftexp.utils.ranks import every_rank, own, summed


class Throughput(pl.Callback):
    """Counts tokens of every training batch (all, and non-pad "effective" ones) and logs
    ``train/tokens_per_s`` and ``train/effective_tokens_per_s`` summed over the ranks (one small
    all-reduce per logged step).

    With ``flops_per_token`` (4N + 2N_trainable: forward 2N, backward 2N through the activations
    and 2N per trainable weight, i.e. 6N for full fine-tuning and about 4N for LoRA) and
    ``peak_flops`` (one device's peak FLOP/s), it also logs ``train/mfu`` (all tokens computed,
    padding included: how busy the device is) and ``train/effective_mfu`` (non-pad tokens only:
    useful work, what packing improves).
    """

    def __init__(self, flops_per_token: Optional[float] = None, peak_flops: Optional[float] = None) -> None:
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.total_tokens = 0
        self.total_effective = 0
        self.train_time_s = 0.0
        self._window = [0, 0]
        self._window_time = 0.0
        self._window_start: Optional[float] = None
        self._fit_start: Optional[float] = None
        self._val_start: Optional[float] = None
        self.val_time_s = 0.0
        self._val_before = 0.0  # val_time_s when this fit started (a resumed stage brings earlier fits')
        self.world_size = 1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start, self._val_before = time.perf_counter(), self.val_time_s

    def _train_time_so_far(self) -> float:
        """Training time of the stage: before a resume, plus this fit's wall time less its validation."""
        return self.train_time_s + time.perf_counter() - self._fit_start - (self.val_time_s - self._val_before)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        """The totals so far, every rank's (its own tokens): a stage resumed from this checkpoint
        reports the whole stage, not the part after the resume."""
        so_far = {"tokens": self.total_tokens, "effective": self.total_effective,
                  "train_time_s": self._train_time_so_far(), "val_time_s": self.val_time_s}
        checkpoint["ftexp_throughput"] = every_rank(so_far)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        if "ftexp_throughput" in checkpoint:
            so_far = own(checkpoint["ftexp_throughput"], trainer.global_rank)
            self.total_tokens, self.total_effective = so_far["tokens"], so_far["effective"]
            self.train_time_s, self.val_time_s = so_far["train_time_s"], so_far["val_time_s"]

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if self._window_start is None:
            self._window_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Dict, batch_idx: int) -> None:
        # A lent row (an epoch's last batch, short of rows for every rank) is computed, not learnt from.
        tokens, effective = batch["input_ids"].numel(), 0 if batch.get("lent") else real_tokens(batch)
        self.total_tokens += tokens
        self.total_effective += effective
        self._window[0] += tokens
        self._window[1] += effective
        if (batch_idx + 1) % max(1, trainer.log_every_n_steps):
            return
        elapsed = self._window_time + time.perf_counter() - self._window_start
        world = trainer.world_size
        tokens, effective = summed(self._window, world, pl_module.device)
        pl_module.log("train/tokens_per_s", tokens / elapsed, on_step=True, on_epoch=False)
        pl_module.log("train/effective_tokens_per_s", effective / elapsed, on_step=True, on_epoch=False)
        if self.flops_per_token and self.peak_flops:  # per device: the ranks' mean
            pl_module.log("train/mfu", self.mfu(tokens / world / elapsed), on_step=True, on_epoch=False)
            pl_module.log("train/effective_mfu", self.mfu(effective / world / elapsed), on_step=True, on_epoch=False)
        self._window = [0, 0]
        self._window_time = 0.0
        self._window_start = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        # Validation time is not training time: bank the window's time so far and pause it.
        self._val_start = time.perf_counter()
        if self._window_start is not None:
            self._window_time += time.perf_counter() - self._window_start
            self._window_start = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._val_start is not None:
            self.val_time_s += time.perf_counter() - self._val_start

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_time_s = self._train_time_so_far()
        self.world_size = trainer.world_size
        self.total_tokens, self.total_effective = (int(v) for v in summed(
            [self.total_tokens, self.total_effective], trainer.world_size, pl_module.device))

    def mfu(self, tokens_per_s_per_device: float) -> float:
        return tokens_per_s_per_device * self.flops_per_token / self.peak_flops

    def summary(self) -> Dict[str, float]:
        """Totals over the stage and every rank (after ``on_train_end``); rates are per second of training
        (validation time left out), MFU per device."""
        t, world = max(self.train_time_s, 1e-9), self.world_size
        out = {
            "tokens": float(self.total_tokens),
            "effective_tokens": float(self.total_effective),
            "train_time_s": self.train_time_s,
            "val_time_s": self.val_time_s,
            "tokens_per_s": self.total_tokens / t,
            "effective_tokens_per_s": self.total_effective / t,
        }
        if self.flops_per_token and self.peak_flops:
            out["mfu"] = self.mfu(self.total_tokens / world / t)
            out["effective_mfu"] = self.mfu(self.total_effective / world / t)
            out["peak_tflops"] = self.peak_flops / 1e12
        return out

