"""The lines a run prints at its end: the headline metrics, where results.json and the trackers' files went."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from ftexp.tracking.results import RESULTS_FILE


def print_summary(results: Dict[str, Any], objective: Optional[str] = None) -> None:
    """A few lines: the headline metrics, where the results went, the wall time (results.json has every metric)."""
    print(f"ftexp: {results['status']} in {results['wall_time_s']['total']:.1f}s")
    for line in _wrap([f"{k}={v:.4g}" for k, v in headline(results["metrics"], objective).items()]):
        print(f"ftexp:   {line}")
    print(f"ftexp: results: {Path(results['run_dir']) / RESULTS_FILE}")
    logger = results.get("logger") or {}
    for logged in logger.get("loggers") or ([logger] if logger else []):
        print(f"ftexp: {logged['type']}: {_beside(logged['dir'], results['run_dir'])}")


def _beside(path: str, run_dir: str) -> str:
    """``path`` from the run's folder (named on the line above) when it lies in it: a shorter line."""
    try:
        return str(Path(path).relative_to(run_dir)) + " (in the run's folder)"
    except ValueError:
        return path


_HEADLINE = ("accuracy", "macro_f1", "loss")
_NOT_A_TASK = ("train", "val", "cl", "eval", "lr")


def headline(metrics: Dict[str, Any], objective: Optional[str] = None, most: int = 6) -> Dict[str, float]:
    """The metrics a reader looks at first: the sweep's objective, the primary task's (its keys have no task
    prefix: ``test/accuracy``) accuracy, macro F1 and loss, ``cl/acc``, ``cl/bwt`` and ``train/loss``."""
    scores = {k: v for k, v in metrics.items() if isinstance(v, float)}
    primary = [k for k in scores if k.count("/") == 1 and k.split("/")[0] not in _NOT_A_TASK
               and not k.endswith("/n")]
    # A task without accuracy or loss (generation) shows its first scores instead.
    main = [k for k in primary if k.split("/")[1] in _HEADLINE] or primary[:2]
    keys = [objective, *main, "cl/acc", "cl/bwt", "train/loss"]
    chosen = [k for i, k in enumerate(keys) if k in scores and k not in keys[:i]]
    return {k: scores[k] for k in chosen[:most]}


def _wrap(items: List[str], width: int = 90) -> List[str]:
    lines: List[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += "  " + item
        else:
            lines.append(item)
    return lines
