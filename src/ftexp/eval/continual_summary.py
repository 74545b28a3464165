"""The continual-learning summary of a finished multi-stage run: the score matrix over rows and
tasks, its metrics (see :mod:`ftexp.eval.continual`), a plot, and the flat keys trackers log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from ftexp.data.base import Task
from ftexp.eval.continual import continual_metrics, score_matrix

log = logging.getLogger(__name__)



def score_key(metrics: Dict[str, float]) -> Optional[str]:
    """The one score per task that fills the matrix: accuracy (or MC1, or ROUGE-L) where there is
    one, else the loss."""
    return next((k for k in ("test/accuracy", "test/mc1", "test/rougeL", "test/loss") if k in metrics), None)


def continual_summary(rows, tasks: Dict[str, Task], stage_tasks: List[Task], run_dir: Path,
                      stage_names: List[str]) -> Dict[str, Any]:
    """The score matrix over rows and tasks, its continual-learning metrics, and a plot of it."""
    from ftexp.tracking.plots import plot_matrix

    keys = {name: score_key(rows[0]["metrics"].get(name, {})) for name in tasks}
    names = [name for name, key in keys.items() if key is not None]
    first: Dict[str, int] = {}
    for k, t in enumerate(stage_tasks, start=1):
        first.setdefault(t.name, k)
    R = score_matrix(rows, names, keys)
    metrics = continual_metrics(R, names, first, {n: not keys[n].endswith("loss") for n in names})
    summary = {"tasks": names, "score": {n: keys[n] for n in names}, "rows": ["base", *stage_names], "R": R,
               "first_trained": first, **metrics}
    try:
        summary["plot"] = str(plot_matrix(R, names, summary["rows"], keys, run_dir / "continual.png"))
    except Exception as exc:  # noqa: BLE001 - a plot must never fail a finished run
        log.warning("could not draw the forgetting matrix: %s", exc)
    return summary


def flat_continual(summary: Dict[str, Any]) -> Dict[str, float]:
    """``cl/acc``, ``cl/bwt``, ``cl/fwt``, ``cl/forgetting/<task>``, ``cl/retention/<task>`` for trackers."""
    out = {f"cl/{k}": summary[k] for k in ("acc", "bwt", "fwt", "mean_forgetting") if summary.get(k) is not None}
    for group in ("forgetting", "retention"):
        out.update({f"cl/{group}/{t}": v for t, v in summary.get(group, {}).items()})
    return out
