"""The compare report in W&B: a ``compare`` run in the sweep's group (the sweep's identity, tagged
``sweep:<it>``; a sweep grouped per arm has its jobs in groups of their own), holding the report, the table
and the plots as one artifact (and as a table and images to look at in the run's page)."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Optional

from ftexp.compare.collect import CompareError, Sweep

REPORT_FILES = ("report.md", "table.csv")


def artifact_name(group: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.'."""
    return "compare-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", group).strip("_")


def log_report(sweep: Sweep, report: Path) -> str:
    """Log ``report``'s folder as an artifact of a new run (job_type ``compare``) in the sweep's W&B
    project and group. Offline unless WANDB_MODE or the jobs' ``logger.mode`` say otherwise (the
    offline run lands in ``<report folder>/wandb/``, for ``wandb sync``). Returns where it went."""
    where = sweep.wandb
    if not where or not where.get("group"):
        raise CompareError("--log-wandb: the sweep's jobs were not logged to W&B (no results.json says "
                           "logger WandbLogger with a group), so there is no group to add the report to; "
                           "run the sweep with logger=wandb, or leave out --log-wandb")
    folder = report.parent
    mode = os.environ.get("WANDB_MODE") or where.get("mode") or "offline"
    try:
        import wandb

        run = wandb.init(project=where.get("project") or "ftexp", entity=where.get("entity"), group=where["group"],
                         job_type="compare", name=f"{where['group']}/compare", dir=str(folder), mode=mode,
                         tags=[f"sweep:{where['group']}"[:64]],
                         config={"sweep": where["group"], "source": sweep.source, "swept": sweep.keys,
                                 "jobs": len(sweep.jobs), "completed": len(sweep.completed),
                                 "problems": len(sweep.problems)},
                         settings=wandb.Settings(silent=True, console="off", init_timeout=30))
    except Exception as exc:  # noqa: BLE001 - no wandb, no login: the report is on disk all the same
        raise CompareError(f"--log-wandb: could not start a W&B run ({type(exc).__name__}: {exc}); "
                           f"the report is written: {report}") from None
    try:
        artifact = wandb.Artifact(artifact_name(where["group"]), type="compare-report",
                                  description=f"ftexp.compare of {sweep.source}",
                                  metadata={"swept": sweep.keys, "jobs": len(sweep.jobs)})
        pngs = sorted(folder.glob("*.png"))
        for path in [folder / f for f in REPORT_FILES] + pngs:
            if path.is_file():
                artifact.add_file(str(path))
        run.log_artifact(artifact)
        with (folder / "table.csv").open(encoding="utf-8", newline="") as f:
            header, *rows = list(csv.reader(f))
        run.log({"compare/table": wandb.Table(columns=header, data=rows),
                 **{f"compare/{p.stem}": wandb.Image(str(p)) for p in pngs}})
        location: Optional[str] = getattr(run, "url", None) if mode == "online" else None
        return location or str(Path(run.dir).parent)
    finally:
        run.finish()
