"""``python -m ftexp.compare``: a sweep's jobs side by side, from its multirun folder or its W&B group.

Reads only results files (and W&B's API): never training code, torch, transformers or Lightning, so
it starts in well under a second; matplotlib is imported only to draw. Writes ``report.md``,
``table.csv`` (mean, std and 95 % CI over seeds per swept cell and metric) and the plots the sweep
calls for (its experiment or sweep file's ``report:`` node, as each job's config records it); jobs that
failed or whose results cannot be read are listed with why, never dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ftexp.compare.collect import CompareError, Sweep, read_multirun

__all__ = ["CompareError", "Sweep", "compare_folder", "compare_wandb", "default_out", "read_multirun"]


def default_out(folder: Optional[Path], group: Optional[str]) -> Path:
    """``<folder>/compare/`` for a multirun folder, ``compare/<group>/`` for a W&B group."""
    return Path(folder) / "compare" if folder is not None else Path("compare") / str(group).replace("/", "_")


def compare_folder(folder: Path, out: Optional[Path] = None, metric: Optional[str] = None) -> Path:
    """Compare the jobs of a Hydra multirun folder; returns report.md's path (default: ``<folder>/compare/``)."""
    from ftexp.compare.report import write_report

    sweep = read_multirun(Path(folder))
    return write_report(sweep, Path(out) if out else default_out(folder, None), metric)


def compare_wandb(path: str, group: str, out: Optional[Path] = None, metric: Optional[str] = None,
                  api: Any = None) -> Path:
    """Compare the runs of W&B group ``group`` in ``entity/project`` (default out: ``compare/<group>/``)."""
    from ftexp.compare.report import write_report
    from ftexp.compare.wandb_runs import read_wandb

    sweep = read_wandb(path, group, api=api)
    return write_report(sweep, Path(out) if out else default_out(None, group), metric)
