"""``logger=wandb|csv|tensorboard|mlflow|none``, or several (``logger=[tensorboard,wandb]``): the job's
trackers, behind one :class:`Loggers`, whose Lightning loggers every stage's Trainer gets.

Each stage gets a fresh Lightning Trainer whose step counter starts at 0; the Lightning loggers
here add the steps of the earlier stages (``step_offset``), so the curves of a multi-stage run
continue instead of overlapping, and evaluation rows land at the step where they were measured.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from pytorch_lightning.loggers import CSVLogger as _LightningCSV
from pytorch_lightning.loggers import WandbLogger as _LightningWandb
from pytorch_lightning.utilities import rank_zero_only

from ftexp.tracking.identity import RunIdentity, tags
from ftexp.utils.build import build

log = logging.getLogger(__name__)


class _StepOffset:
    """Mixin for a Lightning logger: stage-local steps become run-wide steps."""

    step_offset = 0

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        super().log_metrics(metrics, None if step is None else step + self.step_offset)


class OffsetCSVLogger(_StepOffset, _LightningCSV):
    pass


class OffsetWandbLogger(_StepOffset, _LightningWandb):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Lightning always passes ``anonymous`` to wandb.init, which then warns that it has no effect.
        self._wandb_init.pop("anonymous", None)


class NoLogger:
    """``logger=none``: nothing besides results.json. The base of every tracker: ``cfg`` is the option's
    own config (``logger.backends.<name>``), ``settings`` the logger config that names the run."""

    def __init__(self, cfg: Any, settings: Any = None) -> None:
        self.cfg, self.settings = cfg, settings
        self.lightning: Optional[Any] = None
        self.last_step = 0  # the run-wide step of the newest row logged: where the final metrics go

    def start(self, run_dir: Path, config: Dict[str, Any], identity: RunIdentity) -> None:
        """Open the run; ``config`` is the resolved config, logged with it."""

    def set_step_offset(self, steps: int) -> None:
        """Optimiser steps of the stages before the one about to train."""
        if self.lightning is not None:
            self.lightning.step_offset = steps

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        """Log at run-wide ``step`` (not shifted by the stage offset)."""
        self.last_step = max(self.last_step, step)
        if self.lightning is not None:
            offset, self.lightning.step_offset = self.lightning.step_offset, 0
            try:
                self.lightning.log_metrics(metrics, step=step)
            finally:
                self.lightning.step_offset = offset

    def log_summary(self, metrics: Dict[str, float]) -> None:
        """The run's final metrics (results.json's ``metrics``), as the tracker's summary."""

    def log_files(self, run_dir: Path, written: Dict[str, Any]) -> None:
        """What the finished run wrote besides metrics: the plots in ``run_dir`` and the forgetting matrix of
        ``written`` (its results.json)."""

    def finish(self, failed: bool, error: Optional[str] = None) -> None:
        """Close the run, marking it failed (with the error) when the job failed."""
        if self.lightning is not None:
            self.lightning.finalize("failed" if failed else "success")

    @property
    def location(self) -> Optional[str]:
        return None

    @property
    def run_id(self) -> Optional[str]:
        """The tracker's id of the run (W&B's), where it has one."""
        return None


class CSVLogger(NoLogger):
    """``logger=csv``: Lightning's CSVLogger, ``<run dir>/csv/metrics.csv``."""

    def start(self, run_dir: Path, config: Dict[str, Any], identity: RunIdentity) -> None:
        # Lightning's writer deletes an existing metrics.csv; a resumed job keeps what it logged before
        # the interruption (rows after its last checkpoint appear twice, as in W&B).
        earlier = _csv_rows(Path(run_dir) / "csv" / "metrics.csv") if config.get("resume") else []
        self.lightning = OffsetCSVLogger(save_dir=str(run_dir), name="csv", version="")
        if earlier:
            writer = self.lightning.experiment
            writer.metrics = earlier + writer.metrics
        self.lightning.log_hyperparams(config)

    @property
    def location(self) -> Optional[str]:
        return self.lightning.log_dir if self.lightning is not None else None


def _csv_rows(path: Path) -> List[Dict[str, str]]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as file:
            return list(csv.DictReader(file))
    except OSError:
        return []


def previous_run_id(run_dir: Path) -> Optional[str]:
    """The id of the newest W&B run this job folder holds (``wandb/[offline-]run-<time>-<id>``)."""
    runs = [p for p in (Path(run_dir) / "wandb").glob("*run-*-*")
            if p.is_dir() and not p.is_symlink() and p.name.split("-", 1)[0] in ("run", "offline")]
    runs.sort(key=lambda p: p.name.split("-")[-2])  # by the start time in the name (YYYYMMDD_HHMMSS)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


class WandbLogger(NoLogger):
    """``logger=wandb``: one W&B run per job, offline unless ``logger.mode``/``WANDB_MODE`` say
    otherwise. Jobs of a sweep share a group (``logger.group``, else the sweep's folder)."""

    def start(self, run_dir: Path, config: Dict[str, Any], identity: RunIdentity) -> None:
        import wandb

        c = self.settings
        # A previous job of the same process (multirun) must not leak its run into this one.
        if wandb.run is not None:
            wandb.finish()
        # A resumed job continues its own W&B run (same id) instead of starting a second one.
        previous = previous_run_id(run_dir) if config.get("resume") else None
        self.lightning = OffsetWandbLogger(
            **({"id": previous, "resume": "allow"} if previous else {}),
            project=c.project,
            entity=c.entity,
            group=c.group or identity.group,
            job_type=c.job_type or identity.job_type,
            tags=tags(identity.tags, c.tags) or None,
            name=c.name or identity.name,
            save_dir=str(run_dir),
            mode=c.mode,
            config=config,
            # The Logs tab: stdout and stderr as the job printed them (wrapped writes, which work with a
            # file or a pipe as stdout too); only rank 0 opens a run (job.py: other ranks get a NoLogger).
            settings=wandb.Settings(silent=True, console="wrap"),
        )
        self.run = self.lightning.experiment  # start now, so the run exists even if training fails
        # What the run tables show per metric: the best validation loss, the last of everything else.
        self.run.define_metric("val/loss", summary="min")
        for pattern in ("train/*", "eval/*", "cl/*", "lr"):
            self.run.define_metric(pattern, summary="last")

    def log_summary(self, metrics: Dict[str, float]) -> None:
        if getattr(self, "run", None) is not None:
            self.run.summary.update({f"final/{k}": v for k, v in metrics.items()})

    def log_files(self, run_dir: Path, written: Dict[str, Any]) -> None:
        """Every plot in ``run_dir`` as an image (``plots/<name>``), the forgetting matrix as a table
        (``cl/matrix``); a failure only warns (the run has finished)."""
        if getattr(self, "run", None) is None:
            return
        try:
            from ftexp.tracking.media import run_media

            media = run_media(run_dir, written)
            if media:
                self.run.log(media)
        except Exception as exc:  # noqa: BLE001 - results.json and the plots are on disk all the same
            log.warning("could not log the run's plots to W&B: %s", exc)

    def finish(self, failed: bool, error: Optional[str] = None) -> None:
        import wandb

        if getattr(self, "run", None) is None:
            return
        try:
            self.run.summary["status"] = "failed" if failed else "completed"
            if error:  # W&B keeps no message of its own for a failed run; compare lists this one
                self.run.summary["error"] = error
        finally:
            wandb.finish(exit_code=1 if failed else 0)
            self.run = None

    @property
    def run_id(self) -> Optional[str]:
        run = getattr(self, "run", None)
        return getattr(run, "id", None) if run is not None else None

    @property
    def location(self) -> Optional[str]:
        run = getattr(self, "run", None)
        return str(Path(run.dir).parent) if run is not None and getattr(run, "dir", None) else None


class Loggers(NoLogger):
    """The job's tracker: every logger of ``logger.backends`` (one, or several with ``logger=[a,b]``), each
    call passed to each in turn. The stages' Trainers get their Lightning loggers (a list when several)."""

    def __init__(self, cfg: Any, trackers: Optional[List[NoLogger]] = None) -> None:
        super().__init__(cfg, cfg)
        backends = getattr(cfg, "backends", None) or {}
        self.trackers = trackers if trackers is not None else [build(b, cfg) for b in backends.values()]

    def start(self, run_dir: Path, config: Dict[str, Any], identity: RunIdentity) -> None:
        for tracker in self.trackers:
            tracker.start(run_dir, config, identity)
        found = [t.lightning for t in self.trackers if t.lightning is not None]
        self.lightning = found[0] if len(found) == 1 else (found or None)

    def set_step_offset(self, steps: int) -> None:
        for tracker in self.trackers:
            tracker.set_step_offset(steps)

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log_metrics(metrics, step)

    def log_summary(self, metrics: Dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log_summary(metrics)

    def log_files(self, run_dir: Path, written: Dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_files(run_dir, written)

    def finish(self, failed: bool, error: Optional[str] = None) -> None:
        """Every tracker is closed even when one of them fails to; then the first failure is raised."""
        first: Optional[BaseException] = None
        for tracker in self.trackers:
            try:
                tracker.finish(failed, error)
            except Exception as exc:  # noqa: BLE001 - the other trackers still close their runs
                log.warning("could not close the %s run: %s", type(tracker).__name__, exc)
                first = first or exc
        if first is not None:
            raise first

    def records(self) -> List[Dict[str, Any]]:
        """Each tracker that keeps the run somewhere: its type, where (``dir``) and its id of the run."""
        return [{"type": type(t).__name__, "dir": t.location, "id": t.run_id} for t in self.trackers if t.location]

    @property
    def primary(self) -> Optional[NoLogger]:
        """The tracker results.json names first: W&B's when it is one of them (compare and the review
        import read it), else the first that keeps the run somewhere."""
        kept = [t for t in self.trackers if t.location]
        return next((t for t in kept if isinstance(t, WandbLogger)), kept[0] if kept else None)

    @property
    def location(self) -> Optional[str]:
        return self.primary.location if self.primary is not None else None

    @property
    def run_id(self) -> Optional[str]:
        return self.primary.run_id if self.primary is not None else None
