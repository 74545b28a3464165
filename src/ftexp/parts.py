"""What a run is built from: its tasks, stages and evaluators, and the facts results.json records
about them. Bad stages are refused here, before anything loads."""

from __future__ import annotations

from typing import Any, Dict, List

from omegaconf import DictConfig

from ftexp.data.base import DataError, Task
from ftexp.eval.base import Evaluator
from ftexp.training.stage import Stage
from ftexp.utils.build import build


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


def stage_task(stage: Any, tasks: Dict[str, Task], default: Task) -> Task:
    """The task a stage trains on; evaluation-only data is refused before anything runs."""
    if stage.data and stage.data not in tasks:
        raise DataError(f"stage '{stage.name}': data '{stage.data}' is not one of the run's tasks: {', '.join(tasks)}")
    task = tasks[stage.data] if stage.data else default
    if task.eval_only:
        raise DataError(f"stage '{stage.name}': data '{task.name}' is for evaluation only; refusing to train on it")
    return task


def build_stages(cfg: DictConfig, tasks: Dict[str, Task]) -> List[Stage]:
    """``stages`` resolved: each one's task (the primary task where it names none), the tasks before
    it, and its learning rate (its own, else ``optim.lr``)."""
    trained = [stage_task(stage, tasks, tasks[cfg.data.name]) for stage in cfg.stages]
    return [Stage(index=k, cfg=stage, task=trained[k - 1], earlier=tuple(trained[:k - 1]),
                  lr=stage.lr if stage.lr is not None else cfg.optim.lr, last=k == len(cfg.stages))
            for k, stage in enumerate(cfg.stages, start=1)]


def build_evaluators(evaluator_cfgs: Any) -> List[Evaluator]:
    """One evaluator per entry of ``evaluator``, named by its key (``generation``, ``human_review`` ...)."""
    evaluators = []
    for key, evaluator_cfg in evaluator_cfgs.items():
        evaluator = build(evaluator_cfg)
        evaluator.name = key
        evaluators.append(evaluator)
    return evaluators


def task_info(task: Task) -> Dict[str, Any]:
    return {"name": task.name, "counts": task.counts(), "labels": len(getattr(task, "labels", [])),
            "slices": {name: len(idx) for name, idx in task.slices.items()}, **task.report}


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
