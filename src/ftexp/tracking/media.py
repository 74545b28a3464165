"""What a finished run wrote besides metrics, as W&B media: its plots as images, the continual-learning
summary's forgetting matrix as a table (rows: after each stage, row 0 the untrained model; columns: tasks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional


def matrix_rows(continual: Dict[str, Any]) -> Optional[List[List[Any]]]:
    """results.json's ``continual`` as table rows: ``[row name, R[i][0], R[i][1], ...]``; None without a matrix."""
    R, rows, tasks = continual.get("R"), continual.get("rows"), continual.get("tasks")
    if not (isinstance(R, list) and isinstance(tasks, list) and R):
        return None
    names = rows if isinstance(rows, list) and len(rows) == len(R) else [str(i) for i in range(len(R))]
    return [[str(name), *values] for name, values in zip(names, R)]


def matrix_columns(continual: Dict[str, Any]) -> List[str]:
    """"after stage", then one column per task, named with the score that fills it (``cuad: test/accuracy``)."""
    score = continual.get("score") or {}
    return ["after stage", *(f"{t}: {score[t]}" if t in score else str(t) for t in continual["tasks"])]


def run_media(run_dir: Path, written: Dict[str, Any]) -> Dict[str, Any]:
    """``plots/<name>``: a ``wandb.Image`` per PNG in ``run_dir``; ``cl/matrix``: the forgetting matrix as a
    ``wandb.Table``, when the run has one."""
    import wandb

    media: Dict[str, Any] = {f"plots/{p.stem}": wandb.Image(str(p), caption=p.name)
                             for p in sorted(Path(run_dir).glob("*.png")) if p.is_file()}
    continual = written.get("continual")
    rows = matrix_rows(continual) if isinstance(continual, dict) else None
    if rows:
        media["cl/matrix"] = wandb.Table(columns=matrix_columns(continual), data=rows)
    return media
