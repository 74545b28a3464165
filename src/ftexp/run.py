"""The orchestrator: one run = model + tasks, row 0, then train and evaluate stage after stage.

A :class:`Run` has a named lifecycle: :meth:`Run.set_up` (data, tokenizer, synthetic examples,
model, mitigation, evaluators), :meth:`Run.row` (evaluate every task), :meth:`Run.stage` (train one
stage), :meth:`Run.finish` (evaluators' files, the continual summary, the saved model);
:meth:`Run.execute` drives them, resuming from a stage checkpoint where there is one. It imports the
parts (models, data, mitigation, eval, training, tracking); no part imports it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any, Dict, List

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ftexp.eval.base import EvalContext
from ftexp.eval.continual_summary import continual_summary
from ftexp.eval.row import RowEvaluator
from ftexp.eval.row_cache import RowCache
from ftexp.models.base import count_parameters
from ftexp.models.quantize import quantized_modules, require_backend, unquantized_linears
from ftexp.parts import build_evaluators, build_stages, build_tasks, seeds_used, task_info
from ftexp.record import RunRecord
from ftexp.synthesis import SynthesisInputs, add_synthetic
from ftexp.training import checkpoints
from ftexp.training.stage import Stage, StageOutputs, StageSettings, StageTrainer
from ftexp.training.stage_cache import rng_states_of_ranks, set_rank_rng_state
from ftexp.utils import progress
from ftexp.utils.build import allow_targets, build, typed
from ftexp.utils.devices import process_device

log = logging.getLogger(__name__)

__all__ = ["Run", "RunRecord", "run"]


class Run:
    """One run of a composed config. Evaluation and saving happen on rank 0 only; under DDP the other
    ranks train and wait for it at the next stage's first collective."""

    def __init__(self, cfg: DictConfig, run_dir: Path, tracker: Any, record: RunRecord, rank: int = 0) -> None:
        self.cfg, self.run_dir, self.tracker, self.record, self.rank = cfg, run_dir, tracker, record, rank

    def execute(self) -> RunRecord:
        """Row 0, then each stage and its row (from the newest stage checkpoint under ``resume``)."""
        t0 = time.perf_counter()
        self.set_up()
        self.record.wall_time_s["setup"] = time.perf_counter() - t0
        done = self.resume() if self.cfg.resume else 0
        if not done:
            self.row(0, "base")
        for stage in self.stages[done:]:
            self.stage(stage)
            self.row(stage.index, stage.name)
            if self.cfg.trainer.checkpoints and not stage.last:
                self.save(stage)
        self.finish()
        self.record.wall_time_s["run"] = time.perf_counter() - t0
        return self.record

    # ------------------------------------------------------------------------------ set up

    def set_up(self) -> None:
        """Everything the rows and stages use, built in an order that draws the same random numbers
        in every run of the same config."""
        cfg = self.cfg
        progress.configure(cfg.progress.mode, cfg.progress.every_s, self.rank)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        allow_targets(cfg.allowed_targets)
        self.source = build(cfg.model)
        self.tasks = build_tasks(cfg)
        self.stages: List[Stage] = build_stages(cfg, self.tasks)  # bad stages are refused before loading
        self.device = process_device(cfg.trainer)
        self.tokenizer = self._tokenizer()
        self._add_synthetic()
        for task in self.tasks.values():  # warned, and recorded in results.json -> data
            task.count_cut(self.tokenizer, cfg.model.max_length)
        self.adapter = build(cfg.peft)
        self.model = self.adapter.apply(self._base_model(), typed(cfg.model))
        evaluators = build_evaluators(cfg.evaluator)
        self.mitigation = build(cfg.mitigation)
        self._describe()
        self.rows = RowEvaluator(self.tasks, evaluators, self.device, cfg.trainer.precision,
                                 RowCache(cfg.cache_dir if cfg.cache_rows else None, self.tokenizer),
                                 cfg.get("limit_eval_examples"))
        self.eval_ctx = EvalContext(tokenizer=self.tokenizer, max_length=cfg.model.max_length, seed=cfg.seed,
                                    pretrained=self.source.pretrained, device_name=self.record.info["device"])
        self.trainer = StageTrainer(
            StageSettings(seed=cfg.seed, model=cfg.model, optim=cfg.optim, trainer=cfg.trainer,
                          cache_dir=cfg.cache_dir if cfg.cache_stages else None, resume=cfg.resume,
                          pretrained=self.source.pretrained),
            self.model, self.tokenizer, self.mitigation,
            StageOutputs(self.run_dir, self.tracker.lightning, self.record.info))

    def _tokenizer(self) -> Any:
        """The model's tokenizer; one fitted per run sees all real training texts of every task (the same
        at every n_train and synthetic share), and is shared by content across jobs."""
        tokenizer = self.source.load_tokenizer(
            lambda: chain.from_iterable(t.tokenizer_corpus() for t in self.tasks.values() if not t.eval_only),
            Path(self.cfg.cache_dir))
        if getattr(tokenizer, "cache_info", None):
            self.record.info["tokenizer"] = tokenizer.cache_info
        return tokenizer

    def _base_model(self) -> torch.nn.Module:
        """The model before its adapter: its weights in 4 bits where the adapter wants them so (peft=qlora)."""
        four_bit = self.adapter.quantization(self.device)
        self.quantization = None
        if four_bit is None:
            return self.source.load_model(self.tokenizer)
        require_backend(self.device)
        model = self.source.load_quantized(self.tokenizer, four_bit)
        self.quantization = {**four_bit.record(), "quantized_modules": len(quantized_modules(model)),
                             "unquantized_linears": unquantized_linears(model)}
        return model

    def _add_synthetic(self) -> None:
        started = time.perf_counter()
        for task in self.tasks.values():
            add_synthetic(task, task.cfg.synthetic, SynthesisInputs.of_run(self.cfg, self.source, self.tokenizer,
                                                                          self.device, persist=self.rank == 0))
        self.record.wall_time_s["synthetic"] = time.perf_counter() - started

    def _describe(self) -> None:
        """results.json's facts about the model, the data, the device and the seeds."""
        cfg, info = self.cfg, self.record.info
        main = self.tasks[cfg.data.name]  # the primary task: its metrics are the run's headline metrics
        device = self.device
        info.update(
            model={"name": cfg.model.name, "parameters": count_parameters(self.model),
                   "trust_remote_code": self.source.trust_remote_code, "weights": self.source.provenance,
                   **({"quantization": self.quantization} if self.quantization else {})},
            data=task_info(main),
            device=str(device) if device.type == "cpu" else f"cuda:{torch.cuda.get_device_name()}",
        )
        info["seeds"] = seeds_used(cfg)
        if len(self.tasks) > 1:
            info["tasks"] = {name: task_info(t) for name, t in self.tasks.items() if t is not main}

    # ------------------------------------------------------------------------------ rows and stages

    def row(self, index: int, name: str) -> None:
        """Evaluate every task after stage ``index`` (0: the untrained model), on rank 0."""
        if self.rank != 0:
            return
        started = time.perf_counter()
        self.eval_ctx = replace(self.eval_ctx, row=index, last_row=index == len(self.stages),
                                stages=list(self.record.stages))
        metrics = self.rows.evaluate(self.model, self.eval_ctx)
        self.record.wall_time_s[f"eval/{index}"] = time.perf_counter() - started
        self.tracker.log_metrics(self.record.add_row(index, name, metrics), step=self.record.step)
        log.info("row %d (%s): %s", index, name, _short(metrics))

    def stage(self, stage: Stage) -> None:
        """Train one stage; its summary joins the record."""
        started = time.perf_counter()
        self.tracker.set_step_offset(self.record.step)
        summary = self.trainer.train(stage)
        self.record.step += summary["steps"]
        self.record.wall_time_s[f"stage/{stage.index}"] = time.perf_counter() - started
        self.record.stages.append(summary)

    def save(self, stage: Stage) -> None:
        """The state after ``stage`` and its row, for resume (every rank's random state: a collective)."""
        rngs = rng_states_of_ranks()
        if self.rank == 0:
            checkpoints.save_stage(self.run_dir, stage.index, self.model, self.mitigation, self.record, rngs)

    def resume(self) -> int:
        """Load the newest stage checkpoint of an interrupted run into the model, the mitigation and the
        record; the number of stages it covers (0: none, start from row 0)."""
        found = checkpoints.latest_stage(self.run_dir, len(self.stages))
        if found is None:
            return 0
        path, state = found
        self.model.load_state_dict(state["weights"], strict=False)
        self.mitigation.load_state_dict(state["mitigation"])
        self.record.restore(state["record"])
        set_rank_rng_state(state["rng"], self.rank)
        self.record.info["resumed"] = {"after_stage": state["index"], "checkpoint": str(path)}
        log.info("resume: stages 1-%d and their rows from %s", state["index"], path)
        return state["index"]

    # ------------------------------------------------------------------------------ finish

    def finish(self) -> None:
        """After the last row, on rank 0: the evaluators' files (e.g. the human-review export), the
        continual summary of a multi-stage run, and the trained model where ``save_model``."""
        if self.rank != 0:
            return
        record, cfg = self.record, self.cfg
        for evaluator in self.rows.evaluators:
            info = evaluator.finish(self.eval_ctx, self.run_dir, self.tracker)
            if info:
                record.info.setdefault("evaluators", {})[evaluator.name] = info
        if len(self.stages) > 1:
            record.continual = continual_summary(record.rows, self.tasks, [s.task for s in self.stages],
                                                 self.run_dir, [s.name for s in self.stages])
            self.tracker.log_metrics(record.continual_metrics(), step=record.step)
        if self.rows.cache.hits:
            record.info["row_cache"] = {"reused": self.rows.cache.hits, "path": str(Path(cfg.cache_dir) / "rows")}
        if cfg.save_model:
            record.info["saved_to"] = str(self.adapter.save(self.model, self.tokenizer, self.run_dir))


def run(cfg: DictConfig, run_dir: Path, tracker: Any, record: RunRecord, rank: int = 0) -> RunRecord:
    """Run ``cfg`` into ``run_dir`` (see :class:`Run`)."""
    return Run(cfg, run_dir, tracker, record, rank).execute()


def _short(metrics: Dict[str, Dict[str, float]]) -> str:
    shown = {task: {k: v for k, v in m.items() if not k.endswith("/n") and "/slice/" not in k}
             for task, m in metrics.items()}
    return "; ".join(f"{t}: " + ", ".join(f"{k}={v:.4g}" for k, v in m.items()) for t, m in shown.items())
