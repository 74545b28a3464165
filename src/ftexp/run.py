"""The orchestrator: one run = model + tasks, row 0, then train and evaluate stage after stage.

It imports the parts (models, data, mitigation, eval, training, tracking); no part imports it.
"""

from __future__ import annotations

import logging
import os
from itertools import chain
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from ftexp.data.base import DataError, Task, encode_split
from ftexp.data.datamodule import FineTuneDataModule
from ftexp.eval.base import EvalContext, Evaluator
from ftexp.eval.continual_summary import continual_summary, flat_continual
from ftexp.eval.row_cache import RowCache
from ftexp.mitigation.base import Mitigation, StageContext
from ftexp.models.attention import takes_flat_batches
from ftexp.models.base import count_parameters
from ftexp.synthesis import add_synthetic
from ftexp.training.best_weights import BestWeights
from ftexp.training.divergence import FiniteLoss
from ftexp.training.module import FineTuneModule
from ftexp.training import checkpoints, fsdp
from ftexp.training.stage_cache import (device_count, rng_states_of_ranks, set_rank_rng_state, stage_entry,
                                        stage_key)
from ftexp.training.throughput import Throughput
from ftexp.training.trainer import build_trainer
from ftexp.utils.build import allow_targets, build, typed
from ftexp.utils.devices import PEAK_BF16_TFLOPS, lookup

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """What the run has measured so far; the job wrapper writes it even when the run fails."""

    rows: List[Dict[str, Any]] = field(default_factory=list)  # row k: metrics per task after stage k
    stages: List[Dict[str, Any]] = field(default_factory=list)  # training summary per stage
    wall_time_s: Dict[str, float] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)  # model, data, device ...
    step: int = 0  # optimiser steps so far, over all stages (the x-axis of logged curves)
    continual: Dict[str, Any] = field(default_factory=dict)  # the score matrix and ACC, BWT, ... (2+ stages)

    def final_metrics(self, main_task: str) -> Dict[str, float]:
        """Flat metrics of the last row: the main task's keys as they are (``test/accuracy``),
        other tasks' prefixed with their name, plus the last stage's training summary."""
        out: Dict[str, float] = {}
        if self.rows:
            for task, metrics in self.rows[-1]["metrics"].items():
                prefix = "" if task == main_task else f"{task}/"
                out.update({f"{prefix}{k}": v for k, v in metrics.items()})
        if self.continual:
            out.update({k: v for k, v in flat_continual(self.continual).items() if v is not None})
        if self.stages:
            last = self.stages[-1]
            for key in ("train/loss", "val/loss", "tokens_per_s", "effective_tokens_per_s", "mfu", "effective_mfu"):
                if key in last:
                    out[key if "/" in key else f"train/{key}"] = last[key]
        return out


def eval_device(trainer_cfg: Any) -> torch.device:
    if trainer_cfg.accelerator in ("gpu", "cuda") or (trainer_cfg.accelerator == "auto" and torch.cuda.is_available()):
        # LOCAL_RANK: Lightning's launcher or torchrun; SLURM_LOCALID: ranks that srun started (Lightning
        # gives those no LOCAL_RANK). Before training (synthetic data) every rank needs its own GPU.
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0))))
    return torch.device("cpu")


def evaluate_row(model, ctx: EvalContext, tasks: Dict[str, Task], evaluators: List[Evaluator], device, precision: str,
                 cache: Optional[RowCache] = None):
    """Every evaluator that runs on this row, on every task it applies to: ``{task: {metric: value}}``;
    model-scoped evaluators (lm-evaluation-harness) file their metrics under their own name. Scores
    that ``cache`` holds for these weights and data are reused."""
    cache = cache or RowCache(None)
    model.to(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and precision.startswith("bf16")
        else nullcontext()
    )
    ctx.outputs = {}
    active = [e for e in evaluators if e.runs_on(ctx)]
    row: Dict[str, Dict[str, float]] = {}
    with autocast:
        for name, task in tasks.items():
            for evaluator in active:
                if evaluator.scope == "task" and evaluator.applies_to(task):
                    row.setdefault(name, {}).update(cache.evaluate(evaluator, model, task, ctx))
        for evaluator in active:
            if evaluator.scope == "model":
                prefix = f"{evaluator.name}/"  # filed under the name already: lm_eval/arc_easy/acc
                metrics = {k[len(prefix):] if k.startswith(prefix) else k: v
                           for k, v in cache.evaluate(evaluator, model, None, ctx).items()}
                if metrics:
                    row.setdefault(evaluator.name, {}).update(metrics)
    return row


def run(cfg: DictConfig, run_dir: Path, tracker: Any, record: RunRecord, rank: int = 0) -> RunRecord:
    """Row 0, then each stage and its row. Evaluation and saving happen on rank 0 only; under
    DDP the other ranks train and wait for it at the next stage's first collective."""
    t0 = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    allow_targets(cfg.allowed_targets)
    model_source = build(cfg.model)
    tasks = build_tasks(cfg)
    task = tasks[cfg.data.name]  # the primary task: its metrics are the run's headline metrics
    stage_tasks = [stage_task(stage, tasks, task) for stage in cfg.stages]  # refuse bad stages early
    # A tokenizer fitted per run sees all real training texts of every task: the same at every
    # n_train and synthetic share.
    tokenizer = model_source.load_tokenizer(
        lambda: chain.from_iterable(t.tokenizer_corpus() for t in tasks.values() if not t.eval_only),
        Path(cfg.cache_dir))
    if getattr(tokenizer, "cache_info", None):  # a tokenizer trained per run: shared by content across jobs
        record.info["tokenizer"] = tokenizer.cache_info
    device = eval_device(cfg.trainer)
    started = time.perf_counter()
    for t in tasks.values():
        add_synthetic(t, t.cfg.synthetic, cfg, model_source, tokenizer, Path(cfg.cache_dir), device,
                      persist=rank == 0)
    record.wall_time_s["synthetic"] = time.perf_counter() - started
    for t in tasks.values():  # warned, and recorded in results.json -> data
        t.count_cut(tokenizer, cfg.model.max_length)
    model = model_source.load_model(tokenizer)
    adapter = build(cfg.peft)
    model = adapter.apply(model, typed(cfg.model))
    evaluators = build_evaluators(cfg.evaluator)
    mitigation: Mitigation = build(cfg.mitigation)
    record.info.update(
        model={"name": cfg.model.name, "parameters": count_parameters(model),
               "trust_remote_code": model_source.trust_remote_code, "weights": model_source.provenance},
        data=task_info(task),
        device=str(device) if device.type == "cpu" else f"cuda:{torch.cuda.get_device_name()}",
    )
    eval_ctx = EvalContext(tokenizer=tokenizer, max_length=cfg.model.max_length, seed=cfg.seed,
                           pretrained=model_source.pretrained, device_name=record.info["device"],
                           stages=record.stages)
    record.info["seeds"] = seeds_used(cfg)
    if len(tasks) > 1:
        record.info["tasks"] = {name: task_info(t) for name, t in tasks.items() if t is not task}
    record.wall_time_s["setup"] = time.perf_counter() - t0
    row_cache = RowCache(cfg.cache_dir if cfg.cache_rows else None, tokenizer)

    def add_row(stage_name: str, index: int) -> None:
        if rank != 0:
            return
        started = time.perf_counter()
        eval_ctx.row, eval_ctx.last_row = index, index == len(cfg.stages)
        metrics = evaluate_row(model, eval_ctx, tasks, evaluators, device, cfg.trainer.precision, row_cache)
        record.wall_time_s[f"eval/{index}"] = time.perf_counter() - started
        record.rows.append({"index": index, "stage": stage_name, "metrics": metrics})
        flat = {f"eval/{name}/{k}": v for name, m in metrics.items() for k, v in m.items()}
        tracker.log_metrics({**flat, "stage": float(index)}, step=record.step)
        log.info("row %d (%s): %s", index, stage_name, _short(metrics))

    done = resume_point(cfg, run_dir, model, mitigation, record, rank) if cfg.resume else 0
    if not done:
        add_row("base", 0)
    for index, (stage, stage_data) in enumerate(zip(cfg.stages, stage_tasks), start=1):
        if index <= done:
            continue
        started = time.perf_counter()
        summary = train_stage(cfg, stage, index, model, tokenizer, stage_data, stage_tasks[:index - 1], mitigation,
                              run_dir, tracker, record, pretrained=model_source.pretrained)
        record.wall_time_s[f"stage/{index}"] = time.perf_counter() - started
        record.stages.append(summary)
        add_row(stage.name, index)
        if cfg.trainer.checkpoints and index < len(cfg.stages):
            rngs = rng_states_of_ranks()  # on every rank (a collective under DDP)
            if rank == 0:
                checkpoints.save_stage(run_dir, index, model, mitigation, record, rngs)

    if rank == 0:
        for evaluator in evaluators:  # e.g. the human-review export of the last row's outputs
            info = evaluator.finish(eval_ctx, run_dir, tracker)
            if info:
                record.info.setdefault("evaluators", {})[evaluator.name] = info
    if rank == 0 and len(cfg.stages) > 1:
        record.continual = continual_summary(record.rows, tasks, stage_tasks, run_dir, [s.name for s in cfg.stages])
        tracker.log_metrics(flat_continual(record.continual), step=record.step)
    if row_cache.hits:
        record.info["row_cache"] = {"reused": row_cache.hits, "path": str(Path(cfg.cache_dir) / "rows")}
    if cfg.save_model and rank == 0:
        record.info["saved_to"] = str(adapter.save(model, tokenizer, run_dir))
    record.wall_time_s["run"] = time.perf_counter() - t0
    return record


def resume_point(cfg: DictConfig, run_dir: Path, model, mitigation: Mitigation, record: RunRecord,
                 rank: int) -> int:
    """Load the newest stage checkpoint of an interrupted run into the model, the mitigation and the
    record; the number of stages it covers (0: none, start from row 0)."""
    found = checkpoints.latest_stage(run_dir, len(cfg.stages))
    if found is None:
        return 0
    path, state = found
    model.load_state_dict(state["weights"], strict=False)
    mitigation.load_state_dict(state["mitigation"])
    saved = state["record"]
    record.rows[:], record.stages[:] = saved["rows"], saved["stages"]  # in place: the eval context holds them
    record.step = saved["step"]
    record.wall_time_s.update(saved["wall_time_s"])
    set_rank_rng_state(state["rng"], rank)
    record.info["resumed"] = {"after_stage": state["index"], "checkpoint": str(path)}
    log.info("resume: stages 1-%d and their rows from %s", state["index"], path)
    return state["index"]


def seeds_used(cfg: DictConfig) -> Dict[str, Any]:
    """Every seed the run draws from, as results.json records them (all derive from ``seed``)."""
    init = cfg.model.get("init_seed")
    return {
        "seed": cfg.seed,
        "python_numpy_torch": cfg.seed,  # pl.seed_everything(seed) at the start of the run
        "dataloader_workers": "seed_everything(workers=True): each worker's from seed, rank and worker id",
        "data_subsampling": cfg.seed,  # n_train / n_test subsets, splits, synthetic samples (derived per use)
        "batch_order": {stage.name: cfg.seed + k for k, stage in enumerate(cfg.stages, start=1)},
        "model_init": init if init is not None else cfg.seed,  # random-weight models only
    }


def build_evaluators(evaluator_cfgs: Any) -> List[Evaluator]:
    """One evaluator per entry of ``evaluator``, named by its key (``generation``, ``human_review`` ...)."""
    evaluators = []
    for key, evaluator_cfg in evaluator_cfgs.items():
        evaluator = build(evaluator_cfg)
        evaluator.name = key
        evaluators.append(evaluator)
    return evaluators


def build_tasks(cfg: DictConfig) -> Dict[str, Task]:
    """The run's tasks by name: ``data`` first, then ``tasks``."""
    primary = build(cfg.data, data_dir=cfg.data_dir, seed=cfg.seed)
    tasks = {primary.name: primary}
    for key, task_cfg in cfg.tasks.items():
        task = build(task_cfg, data_dir=cfg.data_dir, seed=cfg.seed)
        if task.name in tasks:
            raise DataError(f"tasks.{key}: a second task named '{task.name}'; give data configs distinct names")
        tasks[task.name] = task
    return tasks


def task_info(task: Task) -> Dict[str, Any]:
    return {"name": task.name, "counts": task.counts(), "labels": len(getattr(task, "labels", [])),
            "slices": {name: len(idx) for name, idx in task.slices.items()}, **task.report}


def stage_task(stage: Any, tasks: Dict[str, Task], default: Task) -> Task:
    """The task a stage trains on; evaluation-only data is refused before anything runs."""
    if stage.data and stage.data not in tasks:
        raise DataError(f"stage '{stage.name}': data '{stage.data}' is not one of the run's tasks: {', '.join(tasks)}")
    task = tasks[stage.data] if stage.data else default
    if task.eval_only:
        raise DataError(f"stage '{stage.name}': data '{task.name}' is for evaluation only; refusing to train on it")
    return task


def train_stage(cfg, stage, index, model, tokenizer, task, earlier, mitigation, run_dir, tracker,
                record, pretrained: bool = True) -> Dict[str, Any]:
    max_length = cfg.model.max_length

    def encode(examples) -> List[Dict[str, List[int]]]:
        """Training rows, each example rendered as its own task renders it (replayed ones too)."""
        owners = {t.name: t for t in (*earlier, task)}
        groups: Dict[str, List[int]] = {}
        for i, ex in enumerate(examples):
            groups.setdefault(ex.source if ex.source in owners else task.name, []).append(i)
        rows: List[Any] = [None] * len(examples)
        for name, idx in groups.items():
            owner = owners[name]
            encoded = encode_split(tokenizer, [examples[i] for i in idx], max_length, owner.completion_prefix,
                                   cfg.model.train_on_prompt, owner.chat_template)
            for i, row in zip(idx, encoded):
                rows[i] = row
        return rows

    datamodule = FineTuneDataModule(
        train=encode_split(tokenizer, task.splits["train"], max_length, task.completion_prefix,
                           cfg.model.train_on_prompt, task.chat_template),
        val=encode_split(tokenizer, task.splits.get("val", []), max_length, task.completion_prefix,
                         chat=task.chat_template),
        pad_id=tokenizer.pad_token_id,
        batch_size=cfg.optim.batch_size,
        seed=cfg.seed + index,
        num_workers=cfg.trainer.num_workers,
        group_by_length=cfg.trainer.group_by_length,
        pack_length=(cfg.trainer.pack_length or max_length) if cfg.trainer.packing else None,
        pack_flat=cfg.trainer.packing and takes_flat_batches(model),
    )
    ctx = StageContext(index=index, name=stage.name, model=model, datamodule=datamodule, task=task,
                       tokenizer=tokenizer, encode=encode, earlier=list(earlier), seed=cfg.seed,
                       pretrained=pretrained, last=index == len(cfg.stages))
    tracker.set_step_offset(record.step)
    mitigation.before_stage(ctx)
    lr = stage.lr if stage.lr is not None else cfg.optim.lr
    with stage_entry(cfg.cache_dir, cached_stage_key(cfg, stage, index, lr, model, datamodule, mitigation, ctx)) as entry:
        if entry is not None and entry.hit:
            summary = entry.restore(model)
            log.info("stage %d (%s): reused the weights an earlier job trained with the same inputs (%s)",
                     index, stage.name, entry.path)
        else:
            summary = fit_stage(cfg, stage, index, lr, model, datamodule, task, mitigation, run_dir, tracker,
                                record)
            if entry is not None:
                summary = entry.store(model, summary)
    mitigation.after_stage(ctx)
    record.step += summary["steps"]
    return summary


def cached_stage_key(cfg, stage, index, lr, model, datamodule, mitigation, ctx) -> Optional[str]:
    """The stage cache's key, or None where the stage is not shared: the last stage (its weights are
    the job's own result), a stage the mitigation acts on, or a multi-process trainer."""
    if not cfg.cache_stages or index == len(cfg.stages) or mitigation.acts_on(ctx) or device_count(cfg.trainer) > 1:
        return None
    dm = datamodule
    rows = {"train": dm.train, "val": dm.val, "replay": dm.replay}
    settings = {"stage": OmegaConf.to_container(stage, resolve=True), "lr": lr,
                "optim": OmegaConf.to_container(cfg.optim, resolve=True),
                "trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
                "model": OmegaConf.to_container(cfg.model, resolve=True),
                "batches": {"pad_id": dm.pad_id, "batch_size": dm.batch_size, "seed": dm.seed,
                            "group_by_length": dm.group_by_length, "val_batch_size": dm.val_batch_size,
                            "replay_ratio": dm.replay_ratio, "replay_mode": dm.replay_mode,
                            "pack_length": dm.pack_length, "pack_flat": dm.pack_flat}}
    for ignored in ("num_workers", "enable_progress_bar", "log_every_n_steps"):  # no effect on the weights
        settings["trainer"].pop(ignored, None)
    return stage_key(model, rows, settings)


def mfu_inputs(model: torch.nn.Module, trainer_cfg: Any) -> Tuple[float, Optional[float]]:
    """FLOPs per training token (4N + 2N_trainable) and one device's peak FLOP/s (None: unknown)."""
    counts = count_parameters(model)
    peak = trainer_cfg.get("peak_tflops")
    if peak is None and eval_device(trainer_cfg).type == "cuda":
        peak = lookup(torch.cuda.get_device_name(), PEAK_BF16_TFLOPS)
    return 4.0 * counts["total"] + 2.0 * counts["trainable"], (peak * 1e12 if peak else None)


def fit_stage(cfg, stage, index, lr, model, datamodule, task, mitigation, run_dir, tracker, record) -> Dict[str, Any]:
    """Train one stage with Lightning (from its last epoch checkpoint when resuming); its summary
    (steps, epochs, throughput, losses)."""
    module = FineTuneModule(model, cfg.optim, lr=lr, mitigation=mitigation, compile=cfg.trainer.compile,
                            compile_scope=cfg.trainer.compile_scope, fused_loss=cfg.trainer.fused_loss,
                            master_weights=cfg.trainer.master_weights)
    throughput = Throughput(*mfu_inputs(model, cfg.trainer))
    callbacks: List[Any] = [throughput, FiniteLoss(stage.name, lr)]
    if cfg.trainer.checkpoints:
        callbacks += checkpoints.epoch_checkpoints(run_dir, index, cfg.trainer.checkpoint_every_n_steps)
    last = checkpoints.last_epoch_checkpoint(run_dir, index) if cfg.resume else None
    if last is not None:
        log.info("resume: stage %d (%s) from %s", index, stage.name, last)
        record.info.setdefault("resumed", {})[f"stage{index}"] = str(last)
    sharded = cfg.trainer.strategy == "fsdp"
    buffers = fsdp.saved_buffers(module) if sharded else {}
    trainer = build_trainer(cfg.trainer, stage, run_dir, tracker.lightning, callbacks=callbacks,
                            validate=bool(datamodule.val),
                            strategy=fsdp.strategy(cfg.trainer.fsdp, model, cfg.trainer.precision) if sharded else None)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last else None)
    if sharded:  # evaluation, the mitigation and the next stage take the plain model, whole
        fsdp.unshard_in_place(trainer.strategy.model, module, buffers)  # (FSDP's teardown leaves it wrapped)
    summary: Dict[str, Any] = {"index": index, "name": stage.name, "data": task.name, "lr": lr,
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


def _short(metrics: Dict[str, Dict[str, float]]) -> str:
    return "; ".join(
        f"{t}: " + ", ".join(f"{k}={v:.4g}" for k, v in m.items() if not k.endswith("/n") and "/slice/" not in k)
        for t, m in metrics.items()
    )
