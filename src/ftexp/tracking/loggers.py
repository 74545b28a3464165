"""``logger=wandb|csv|none``: one logger per job, handed to every stage's Trainer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional


class NoLogger:
    """``logger=none``: nothing besides results.json."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.lightning: Optional[Any] = None

    def start(self, run_dir: Path, config: Dict[str, Any], name: str) -> None:
        """Open the run; ``config`` is the resolved config, logged with it."""

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        if self.lightning is not None:
            self.lightning.log_metrics(metrics, step=step)

    def finish(self, failed: bool) -> None:
        """Close the run, marking it failed when the job failed."""
        if self.lightning is not None:
            self.lightning.finalize("failed" if failed else "success")

    @property
    def location(self) -> Optional[str]:
        return None


class CSVLogger(NoLogger):
    """``logger=csv``: Lightning's CSVLogger, ``<run dir>/csv/metrics.csv``."""

    def start(self, run_dir: Path, config: Dict[str, Any], name: str) -> None:
        from pytorch_lightning.loggers import CSVLogger as _CSV

        self.lightning = _CSV(save_dir=str(run_dir), name="csv", version="")
        self.lightning.log_hyperparams(config)

    @property
    def location(self) -> Optional[str]:
        return self.lightning.log_dir if self.lightning is not None else None


class WandbLogger(NoLogger):
    """``logger=wandb``: one W&B run per job, offline unless configured otherwise."""

    def start(self, run_dir: Path, config: Dict[str, Any], name: str) -> None:
        import wandb
        from pytorch_lightning.loggers import WandbLogger as _Wandb

        c = self.cfg
        mode = os.environ.get("WANDB_MODE") or c.mode
        # A previous job of the same process (multirun) must not leak its run into this one.
        if wandb.run is not None:
            wandb.finish()
        self.lightning = _Wandb(
            project=c.project,
            entity=c.entity,
            group=c.group,
            job_type=c.job_type,
            tags=list(c.tags) or None,
            name=c.name or name,
            save_dir=str(run_dir),
            mode=mode,
            config=config,
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.run = self.lightning.experiment  # start now, so the run exists even if training fails

    def finish(self, failed: bool) -> None:
        import wandb

        if getattr(self, "run", None) is None:
            return
        try:
            self.run.summary["status"] = "failed" if failed else "completed"
        finally:
            wandb.finish(exit_code=1 if failed else 0)

    @property
    def location(self) -> Optional[str]:
        run = getattr(self, "run", None)
        return str(Path(run.dir).parent) if run is not None and getattr(run, "dir", None) else None
