"""What a run has measured so far, and the one place its nested metrics become flat keys.

The job wrapper writes the record to results.json even when the run fails; trackers get the same
numbers flattened: ``eval/<task>/<metric>`` per row, the final metrics with the main task's keys as
they are, and the continual-learning keys (``cl/...``) of a multi-stage run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from ftexp.eval.continual_summary import flat_continual

# A stage summary's keys that the final metrics carry (throughput ones under train/).
STAGE_KEYS = ("train/loss", "val/loss", "tokens_per_s", "effective_tokens_per_s", "mfu", "effective_mfu")


def flatten(metrics: Dict[str, Dict[str, float]], prefix: str = "", bare: str = "") -> Dict[str, float]:
    """``{task: {metric: value}}`` as ``{"<prefix><task>/<metric>": value}``; the task named ``bare``
    keeps its metric keys as they are (``test/accuracy``)."""
    return {f"{prefix}{'' if task == bare else task + '/'}{key}": value
            for task, values in metrics.items() for key, value in values.items()}


@dataclass
class RunRecord:
    """Rows, stage summaries, timings and facts; what results.json records of the run."""

    rows: List[Dict[str, Any]] = field(default_factory=list)  # row k: metrics per task after stage k
    stages: List[Dict[str, Any]] = field(default_factory=list)  # training summary per stage
    wall_time_s: Dict[str, float] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)  # model, data, device ...
    step: int = 0  # optimiser steps so far, over all stages (the x-axis of logged curves)
    continual: Dict[str, Any] = field(default_factory=dict)  # the score matrix and ACC, BWT, ... (2+ stages)

    def add_row(self, index: int, stage: str, metrics: Dict[str, Dict[str, float]]) -> Dict[str, float]:
        """Record row ``index``; its metrics flat, as trackers log them."""
        self.rows.append({"index": index, "stage": stage, "metrics": metrics})
        return {**flatten(metrics, prefix="eval/"), "stage": float(index)}

    def restore(self, saved: Dict[str, Any]) -> None:
        """Take over what a stage checkpoint saved (resume)."""
        self.rows, self.stages, self.step = list(saved["rows"]), list(saved["stages"]), saved["step"]
        self.wall_time_s.update(saved["wall_time_s"])

    def continual_metrics(self) -> Dict[str, float]:
        """The continual-learning summary's flat keys (``cl/acc``, ...), those measured."""
        return {k: v for k, v in flat_continual(self.continual).items() if v is not None} if self.continual else {}

    def final_metrics(self, main_task: str) -> Dict[str, float]:
        """Flat metrics of the last row: the main task's keys as they are (``test/accuracy``),
        other tasks' prefixed with their name, plus the last stage's training summary."""
        out = flatten(self.rows[-1]["metrics"], bare=main_task) if self.rows else {}
        out.update(self.continual_metrics())
        last = self.stages[-1] if self.stages else {}
        out.update({key if "/" in key else f"train/{key}": last[key] for key in STAGE_KEYS if key in last})
        return out
