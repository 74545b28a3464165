"""One training stage: its batches, the mitigation's hooks around it, the stage cache, and the fit.

The run hands each stage a :class:`Stage` (what it trains on, with which learning rate) to a
:class:`StageTrainer` that holds what every stage of the run shares: the model, tokenizer,
mitigation and the run's settings (:class:`StageSettings`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from omegaconf import OmegaConf

from ftexp.data.base import Task, encode_split
from ftexp.data.datamodule import Batching, FineTuneDataModule
from ftexp.mitigation.base import Mitigation, StageContext
from ftexp.models.attention import takes_flat_batches
from ftexp.models.base import count_parameters
from ftexp.training import checkpoints, fsdp
from ftexp.training.activation_checkpointing import set_activation_checkpointing
from ftexp.training.best_weights import BestWeights
from ftexp.training.divergence import FiniteLoss
from ftexp.training.module import FineTuneModule, StepOptions
from ftexp.training.stage_cache import device_count, stage_entry, stage_key
from ftexp.training.throughput import Throughput
from ftexp.training.trainer import build_trainer
from ftexp.utils import progress
from ftexp.utils.devices import PEAK_BF16_TFLOPS, lookup, process_device

log = logging.getLogger(__name__)

# Trainer settings with no effect on the weights a stage trains: left out of the stage cache's key.
# Settings that change how a stage runs, not what it learns (activation checkpointing: the same losses).
NOT_IN_CACHE_KEY = ("num_workers", "enable_progress_bar", "log_every_n_steps", "activation_checkpointing")
BATCH_LIMITS = ("limit_train_batches", "limit_val_batches")


@dataclass(frozen=True)
class Stage:
    """One stage of a run, as the run resolved it."""

    index: int  # 1-based: row ``index`` of the score matrix follows it
    cfg: Any  # its entry in ``stages`` (name, data, lr, max_epochs, max_steps)
    task: Task  # the task it trains on
    earlier: Tuple[Task, ...]  # the tasks of the stages before it, in order
    lr: float  # the stage's own, else optim.lr
    last: bool  # the run's last stage: nothing trains after it

    @property
    def name(self) -> str:
        return self.cfg.name


@dataclass(frozen=True)
class StageSettings:
    """The run's settings that every stage trains with."""

    seed: int
    model: Any  # model config: max_length, train_on_prompt (all of it goes into the cache key)
    optim: Any
    trainer: Any
    cache_dir: Optional[str]  # the stage cache's root; None: stages are not shared between jobs
    resume: bool  # continue a stage from its last epoch checkpoint
    pretrained: bool  # the model started from pretrained weights (mitigations may act on that)


@dataclass(frozen=True)
class StageOutputs:
    """Where a stage writes."""

    folder: Path  # the run's folder: epoch checkpoints go under it
    logger: Any  # the tracker's Lightning logger (None: none)
    info: Dict[str, Any]  # results.json's facts: a stage resumed from a checkpoint says so there


class StageTrainer:
    """Trains the run's model stage after stage; rank 0 and the other ranks of a DDP job alike."""

    def __init__(self, settings: StageSettings, model: torch.nn.Module, tokenizer: Any, mitigation: Mitigation,
                 outputs: StageOutputs) -> None:
        self.settings, self.model, self.tokenizer, self.mitigation = settings, model, tokenizer, mitigation
        self.outputs = outputs

    def train(self, stage: Stage) -> Dict[str, Any]:
        """The mitigation's hooks around either the stage cache's weights or a fit; the stage's summary
        (steps, epochs, throughput, losses: results.json -> stages)."""
        datamodule = self.datamodule(stage)
        ctx = StageContext(index=stage.index, name=stage.name, model=self.model, datamodule=datamodule,
                           task=stage.task, tokenizer=self.tokenizer, encode=self.encoder(stage),
                           earlier=list(stage.earlier), seed=self.settings.seed, pretrained=self.settings.pretrained,
                           last=stage.last)
        self.mitigation.before_stage(ctx)
        with stage_entry(self.settings.cache_dir, self.cache_key(stage, datamodule, ctx)) as entry:
            if entry is not None and entry.hit:
                summary = entry.restore(self.model)
                log.info("stage %d (%s): reused the weights an earlier job trained with the same inputs (%s)",
                         stage.index, stage.name, entry.path)
            else:
                summary = self.fit(stage, datamodule)
                if entry is not None:
                    summary = entry.store(self.model, summary)
        self.mitigation.after_stage(ctx)
        return summary

    def datamodule(self, stage: Stage) -> FineTuneDataModule:
        """The stage's training and validation batches (the mitigation may add to them)."""
        s, task, max_length = self.settings, stage.task, self.settings.model.max_length
        trainer = s.trainer
        return FineTuneDataModule(
            train=encode_split(self.tokenizer, task.splits["train"], max_length, task.completion_prefix,
                               s.model.train_on_prompt, task.chat_template),
            val=encode_split(self.tokenizer, task.splits.get("val", []), max_length, task.completion_prefix,
                             chat=task.chat_template),
            batching=Batching(
                pad_id=self.tokenizer.pad_token_id,
                batch_size=s.optim.batch_size,
                seed=s.seed + stage.index,
                num_workers=trainer.num_workers,
                group_by_length=trainer.group_by_length,
                pack_length=(trainer.pack_length or max_length) if trainer.packing else None,
                pack_flat=trainer.packing and takes_flat_batches(self.model),
            ),
        )

    def encoder(self, stage: Stage):
        """Examples -> training rows, each example rendered as its own task renders it (replayed ones too)."""
        owners = {t.name: t for t in (*stage.earlier, stage.task)}
        model_cfg = self.settings.model

        def encode(examples) -> List[Dict[str, List[int]]]:
            groups: Dict[str, List[int]] = {}
            for i, ex in enumerate(examples):
                groups.setdefault(ex.source if ex.source in owners else stage.task.name, []).append(i)
            rows: List[Any] = [None] * len(examples)
            for name, idx in groups.items():
                owner = owners[name]
                encoded = encode_split(self.tokenizer, [examples[i] for i in idx], model_cfg.max_length,
                                       owner.completion_prefix, model_cfg.train_on_prompt, owner.chat_template)
                for i, row in zip(idx, encoded):
                    rows[i] = row
            return rows

        return encode

    def cache_key(self, stage: Stage, datamodule: FineTuneDataModule, ctx: StageContext) -> Optional[str]:
        """The stage cache's key, or None where the stage is not shared: the last stage (its weights are
        the job's own result), a stage the mitigation acts on, or a multi-process trainer."""
        s = self.settings
        if s.cache_dir is None or stage.last or self.mitigation.acts_on(ctx) or device_count(s.trainer) > 1:
            return None
        rows, batches = datamodule.identity()
        # keys (and cache paths in results.json) as before the batch plans: a stage without replay replays nothing
        rows.setdefault("replay", [])
        batches.setdefault("replay_ratio", 0.0)
        batches.setdefault("replay_mode", "replace")
        settings = {"stage": OmegaConf.to_container(stage.cfg, resolve=True), "lr": stage.lr,
                    "optim": OmegaConf.to_container(s.optim, resolve=True),
                    "trainer": OmegaConf.to_container(s.trainer, resolve=True),
                    "model": OmegaConf.to_container(s.model, resolve=True),
                    "batches": batches}
        for ignored in NOT_IN_CACHE_KEY:
            settings["trainer"].pop(ignored, None)
        for limit in BATCH_LIMITS:  # keys as before the limits: a stage on every batch has none
            if settings["trainer"].get(limit) is None:
                settings["trainer"].pop(limit, None)
        return stage_key(self.model, rows, settings)

    def fit(self, stage: Stage, datamodule: FineTuneDataModule) -> Dict[str, Any]:
        """Train one stage with Lightning (from its last epoch checkpoint when resuming)."""
        trainer_cfg = self.settings.trainer
        set_activation_checkpointing(self.model, trainer_cfg.activation_checkpointing)
        module = FineTuneModule(self.model, self.settings.optim, lr=stage.lr, mitigation=self.mitigation,
                                step=StepOptions.of(trainer_cfg))
        throughput = Throughput(*mfu_inputs(self.model, trainer_cfg))
        callbacks: List[Any] = [throughput, FiniteLoss(stage.name, stage.lr)]
        if trainer_cfg.enable_progress_bar:
            callbacks += progress.training_callbacks(f"stage {stage.index} · {stage.name}")
        folder = self.outputs.folder
        if trainer_cfg.checkpoints:
            callbacks += checkpoints.epoch_checkpoints(folder, stage.index, trainer_cfg.checkpoint_every_n_steps)
        last = checkpoints.last_epoch_checkpoint(folder, stage.index) if self.settings.resume else None
        if last is not None:
            log.info("resume: stage %d (%s) from %s", stage.index, stage.name, last)
            self.outputs.info.setdefault("resumed", {})[f"stage{stage.index}"] = str(last)
        sharded = trainer_cfg.strategy == "fsdp"
        buffers = fsdp.saved_buffers(module) if sharded else {}
        strategy = fsdp.strategy(trainer_cfg.fsdp, self.model, trainer_cfg.precision) if sharded else None
        trainer = build_trainer(trainer_cfg, stage.cfg, folder, self.outputs.logger, callbacks=callbacks,
                                validate=bool(datamodule.val), strategy=strategy)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last else None)
        if sharded:  # evaluation, the mitigation and the next stage take the plain model, whole
            fsdp.unshard_in_place(trainer.strategy.model, module, buffers)  # (FSDP's teardown leaves it wrapped)
        return fit_summary(stage, trainer, module, throughput)


def fit_summary(stage: Stage, trainer: Any, module: FineTuneModule, throughput: Throughput) -> Dict[str, Any]:
    """What results.json records of a stage's fit: steps, epochs, throughput, losses."""
    summary: Dict[str, Any] = {"index": stage.index, "name": stage.name, "data": stage.task.name, "lr": stage.lr,
                               "steps": trainer.global_step, "epochs": trainer.current_epoch,
                               "world_size": trainer.world_size}
    summary.update(throughput.summary())
    losses = {**module.losses_at_checkpoint, **trainer.callback_metrics}  # (a resumed stage may train no more)
    if "train/loss" not in losses and (window := module.unlogged_train_loss()) is not None:
        losses["train/loss"] = window  # fewer steps than trainer.log_every_n_steps
    for key in ("train/loss", "val/loss"):
        if key in losses:
            summary[key] = float(losses[key])
    best = next((c for c in trainer.callbacks if isinstance(c, BestWeights)), None)
    if best is not None and best.best_step is not None:  # early stopping: the weights kept are the best check's
        summary["best_step"], summary["val/loss"] = best.best_step, best.best
    return summary


def mfu_inputs(model: torch.nn.Module, trainer_cfg: Any) -> Tuple[float, Optional[float]]:
    """FLOPs per training token (4N + 2N_trainable) and one device's peak FLOP/s (None: unknown)."""
    counts = count_parameters(model)
    peak = trainer_cfg.get("peak_tflops")
    if peak is None and process_device(trainer_cfg).type == "cuda":
        peak = lookup(torch.cuda.get_device_name(), PEAK_BF16_TFLOPS)
    return 4.0 * counts["total"] + 2.0 * counts["trainable"], (peak * 1e12 if peak else None)
