"""Tokens per second during training: logged every few steps and summed over the stage."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import pytorch_lightning as pl

from ftexp.data.packing import real_tokens


class Throughput(pl.Callback):
    """Counts tokens of every training batch (all, and non-pad "effective" ones) on this rank and
    logs ``train/tokens_per_s`` and ``train/effective_tokens_per_s`` summed over ranks.

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

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if self._window_start is None:
            self._window_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Dict, batch_idx: int) -> None:
        tokens, effective = batch["input_ids"].numel(), real_tokens(batch)
        self.total_tokens += tokens
        self.total_effective += effective
        self._window[0] += tokens
        self._window[1] += effective
        if (batch_idx + 1) % max(1, trainer.log_every_n_steps):
            return
        elapsed = self._window_time + time.perf_counter() - self._window_start
        world = trainer.world_size
        pl_module.log("train/tokens_per_s", self._window[0] * world / elapsed, on_step=True, on_epoch=False)
        pl_module.log("train/effective_tokens_per_s", self._window[1] * world / elapsed, on_step=True, on_epoch=False)
        if self.flops_per_token and self.peak_flops:
            pl_module.log("train/mfu", self.mfu(self._window[0] / elapsed), on_step=True, on_epoch=False)
            pl_module.log("train/effective_mfu", self.mfu(self._window[1] / elapsed), on_step=True, on_epoch=False)
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
        self.train_time_s = time.perf_counter() - self._fit_start - self.val_time_s

    def mfu(self, tokens_per_s_per_device: float) -> float:
        return tokens_per_s_per_device * self.flops_per_token / self.peak_flops

    def summary(self, world_size: int = 1) -> Dict[str, float]:
        """Totals over the stage; rates are per second of training (validation time left out)."""
        t = max(self.train_time_s, 1e-9)
        out = {
            "tokens": float(self.total_tokens * world_size),
            "effective_tokens": float(self.total_effective * world_size),
            "train_time_s": self.train_time_s,
            "val_time_s": self.val_time_s,
            "tokens_per_s": self.total_tokens * world_size / t,
            "effective_tokens_per_s": self.total_effective * world_size / t,
        }
        if self.flops_per_token and self.peak_flops:
            out["mfu"] = self.mfu(self.total_tokens / t)
            out["effective_mfu"] = self.mfu(self.total_effective / t)
            out["peak_tflops"] = self.peak_flops / 1e12
        return out
