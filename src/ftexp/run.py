"""The orchestrator: one run = model + tasks, row 0, then train and evaluate stage after stage.

It imports the parts (models, data, mitigation, eval, training, tracking); no part imports it.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ftexp.data.base import DataError, Task, encode_split
from ftexp.data.datamodule import FineTuneDataModule
from ftexp.eval.base import EvalContext, Evaluator
from ftexp.mitigation.base import Mitigation, StageContext
from ftexp.models.base import count_parameters
from ftexp.synthesis import add_synthetic
from ftexp.training.best_weights import BestWeights
from ftexp.training.module import FineTuneModule
from ftexp.training.throughput import Throughput
from ftexp.training.trainer import build_trainer
from ftexp.utils.build import build, typed

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """What the run has measured so far; the job wrapper writes it even when the run fails."""

    rows: List[Dict[str, Any]] = field(default_factory=list)  # row k: metrics per task after stage k
    stages: List[Dict[str, Any]] = field(default_factory=list)  # training summary per stage
    wall_time_s: Dict[str, float] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)  # model, data, device ...
    step: int = 0  # optimiser steps so far, over all stages (the x-axis of logged curves)

    def final_metrics(self, main_task: str) -> Dict[str, float]:
        """Flat metrics of the last row: the main task's keys as they are (``test/accuracy``),
        other tasks' prefixed with their name, plus the last stage's training summary."""
        out: Dict[str, float] = {}
        if self.rows:
            for task, metrics in self.rows[-1]["metrics"].items():
                prefix = "" if task == main_task else f"{task}/"
                out.update({f"{prefix}{k}": v for k, v in metrics.items()})
        if self.stages:
            last = self.stages[-1]
            for key in ("train/loss", "val/loss", "tokens_per_s", "effective_tokens_per_s"):
                if key in last:
                    out[key if "/" in key else f"train/{key}"] = last[key]
        return out


def eval_device(trainer_cfg: Any) -> torch.device:
    if trainer_cfg.accelerator in ("gpu", "cuda") or (trainer_cfg.accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def evaluate_row(model, ctx: EvalContext, tasks: Dict[str, Task], evaluators: List[Evaluator], device, precision: str):
    """Every evaluator on every task it applies to: ``{task: {metric: value}}``."""
    model.to(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and precision.startswith("bf16")
        else nullcontext()
    )
    row: Dict[str, Dict[str, float]] = {}
    with autocast:
        for name, task in tasks.items():
            for evaluator in evaluators:
                if evaluator.applies_to(task):
                    row.setdefault(name, {}).update(evaluator.evaluate(model, task, ctx))
    return row


def run(cfg: DictConfig, run_dir: Path, tracker: Any, record: RunRecord, rank: int = 0) -> RunRecord:
    """Row 0, then each stage and its row. Evaluation and saving happen on rank 0 only; under
    DDP the other ranks train and wait for it at the next stage's first collective."""
    t0 = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    model_source = build(cfg.model)
    task: Task = build(cfg.data, data_dir=cfg.data_dir, seed=cfg.seed)
    tasks = {task.name: task}
    stage_tasks = [stage_task(stage, tasks, task) for stage in cfg.stages]  # refuse bad stages early
    # A tokenizer fitted per run sees all real training texts: the same at every n_train and synthetic share.
    tokenizer = model_source.load_tokenizer(task.tokenizer_corpus, Path(cfg.cache_dir))
    device = eval_device(cfg.trainer)
    started = time.perf_counter()
    add_synthetic(task, cfg.data.synthetic, cfg, model_source, tokenizer, Path(cfg.cache_dir), device,
                  persist=rank == 0)
    record.wall_time_s["synthetic"] = time.perf_counter() - started
    model = model_source.load_model(tokenizer)
    adapter = build(cfg.peft)
    model = adapter.apply(model, typed(cfg.model))
    evaluators: List[Evaluator] = [build(e) for e in cfg.evaluator.values()]
    mitigation: Mitigation = build(cfg.mitigation)
    eval_ctx = EvalContext(tokenizer=tokenizer, max_length=cfg.model.max_length)
    record.info.update(
        model={"name": cfg.model.name, "parameters": count_parameters(model),
               "trust_remote_code": model_source.trust_remote_code},
        data={"name": task.name, "counts": task.counts(), "labels": len(getattr(task, "labels", [])),
              "slices": {name: len(idx) for name, idx in task.slices.items()}, **task.report},
        device=str(device) if device.type == "cpu" else f"cuda:{torch.cuda.get_device_name()}",
    )
    record.wall_time_s["setup"] = time.perf_counter() - t0

    def add_row(stage_name: str, index: int) -> None:
        if rank != 0:
            return
        started = time.perf_counter()
        metrics = evaluate_row(model, eval_ctx, tasks, evaluators, device, cfg.trainer.precision)
        record.wall_time_s[f"eval/{index}"] = time.perf_counter() - started
        record.rows.append({"index": index, "stage": stage_name, "metrics": metrics})
        flat = {f"eval/{name}/{k}": v for name, m in metrics.items() for k, v in m.items()}
        tracker.log_metrics({**flat, "stage": float(index)}, step=record.step)
        log.info("row %d (%s): %s", index, stage_name, _short(metrics))

    add_row("base", 0)
    for index, (stage, stage_data) in enumerate(zip(cfg.stages, stage_tasks), start=1):
        started = time.perf_counter()
        summary = train_stage(cfg, stage, index, model, tokenizer, stage_data, mitigation, run_dir, tracker, record)
        record.wall_time_s[f"stage/{index}"] = time.perf_counter() - started
        record.stages.append(summary)
        add_row(stage.name, index)

    if cfg.save_model and rank == 0:
        record.info["saved_to"] = str(adapter.save(model, tokenizer, run_dir))
    record.wall_time_s["run"] = time.perf_counter() - t0
    return record


def stage_task(stage: Any, tasks: Dict[str, Task], default: Task) -> Task:
    """The task a stage trains on; evaluation-only data is refused before anything runs."""
    if stage.data and stage.data not in tasks:
        raise DataError(f"stage '{stage.name}': data '{stage.data}' is not one of the run's tasks: {', '.join(tasks)}")
    task = tasks[stage.data] if stage.data else default
    if task.eval_only:
        raise DataError(f"stage '{stage.name}': data '{task.name}' is for evaluation only; refusing to train on it")
    return task


def train_stage(cfg, stage, index, model, tokenizer, task, mitigation, run_dir, tracker, record) -> Dict[str, Any]:
    max_length = cfg.model.max_length
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
    )
    ctx = StageContext(index=index, name=stage.name, model=model, datamodule=datamodule, task=task)
    tracker.set_step_offset(record.step)
    mitigation.before_stage(ctx)
    lr = stage.lr if stage.lr is not None else cfg.optim.lr
    module = FineTuneModule(model, cfg.optim, lr=lr, mitigation=mitigation)
    throughput = Throughput()
    trainer = build_trainer(cfg.trainer, stage, run_dir, tracker.lightning, callbacks=[throughput],
                            validate=bool(datamodule.val))
    trainer.fit(module, datamodule=datamodule)
    mitigation.after_stage(ctx)
    record.step += trainer.global_step
    summary: Dict[str, Any] = {"index": index, "name": stage.name, "data": task.name, "lr": lr,
                               "steps": trainer.global_step, "epochs": trainer.current_epoch}
    summary.update(throughput.summary(trainer.world_size))
    for key in ("train/loss", "val/loss"):
        if key in trainer.callback_metrics:
            summary[key] = float(trainer.callback_metrics[key])
    best = next((c for c in trainer.callbacks if isinstance(c, BestWeights)), None)
    if best is not None and best.best_step is not None:  # early stopping: the weights kept are the best check's
        summary["best_step"], summary["val/loss"] = best.best_step, best.best
    return summary


def _short(metrics: Dict[str, Dict[str, float]]) -> str:
    return "; ".join(
        f"{t}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if not k.endswith("/n")) for t, m in metrics.items()
    )
