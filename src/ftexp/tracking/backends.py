"""``logger=tensorboard`` and ``logger=mlflow``: Lightning's loggers for TensorBoard and MLflow, with the
metric names, run-wide steps and hyperparameters of the other trackers (:mod:`ftexp.tracking.loggers`)."""

from __future__ import annotations

import logging
import numbers
from pathlib import Path
from typing import Any, Dict, Optional

from pytorch_lightning.loggers import MLFlowLogger as _LightningMLflow
from pytorch_lightning.loggers import TensorBoardLogger as _LightningTB

from ftexp.errors import FtexpError
from ftexp.tracking.identity import RunIdentity, tags
from ftexp.tracking.loggers import NoLogger, _StepOffset

log = logging.getLogger(__name__)

RUN_ID_FILE = "run_id"  # <run dir>/mlflow/run_id: the run a resumed job continues
ERROR_MAX = 5000  # MLflow keeps tag values up to 5,000 characters


class OffsetTensorBoardLogger(_StepOffset, _LightningTB):
    pass


class OffsetMLflowLogger(_StepOffset, _LightningMLflow):
    pass


def _need(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise FtexpError(f"logger={extra} needs the {module} package: pip install 'ftexp[{extra}]'")


def final_metrics(metrics: Dict[str, Any]) -> Dict[str, float]:
    """results.json's final metrics as ``final/<name>`` (the W&B summary's names); numbers only."""
    return {f"final/{k}": float(v) for k, v in metrics.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool)}


class TensorBoardLogger(NoLogger):
    """``logger=tensorboard``: event files in ``<run dir>/tensorboard/``; the resolved config as
    hyperparameters (hparams.yaml beside them, and the HParams tab with the final metrics, ``final/<name>``
    at the last step)."""

    def start(self, run_dir: Path, config: Dict[str, Any], identity: RunIdentity) -> None:
        _need("tensorboard", "tensorboard")
        # default_hp_metric off: no placeholder "hp_metric" curve of -1
        self.lightning = OffsetTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="",
                                                 default_hp_metric=False)
        self.lightning.log_hyperparams(config)  # hparams.yaml
        self.config = config

    def log_summary(self, metrics: Dict[str, float]) -> None:
        """The final metrics at the last step, and the HParams tab: the config beside them."""
        if self.lightning is None:
            return
        offset, self.lightning.step_offset = self.lightning.step_offset, 0  # the last step is run-wide already
        try:
            self.lightning.log_hyperparams(self.config, metrics=final_metrics(metrics) or None, step=self.last_step)
        finally:
            self.lightning.step_offset = offset

    def finish(self, failed: bool, error: Optional[str] = None) -> None:
        if self.lightning is not None:  # TensorBoard has no run status: the event files are flushed
            self.lightning.finalize("failed" if failed else "success")

    @property
    def location(self) -> Optional[str]:
        return str(Path(self.lightning.log_dir)) if self.lightning is not None else None


class MLflowLogger(NoLogger):
    """``logger=mlflow``: one MLflow run per job in the experiment ``logger.project``, named like the W&B run,
    tagged with the run's tags (and ``group``, ``job_type``, ``sweep``); the resolved config as parameters
    (flattened, ``trainer.max_epochs``); the final metrics as ``final/<name>``; status FINISHED or FAILED
    (with the error in the tag ``error``). A resumed job continues its own run."""

    def start(self, run_dir: Path, config: Dict[str, Any], identity: RunIdentity) -> None:
        _need("mlflow", "mlflow")
        c, folder = self.settings, Path(run_dir) / "mlflow"
        uri = c.tracking_uri
        if uri is None:  # a SQLite store in the run's folder: MLflow 3 no longer writes plain-file stores
            folder.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        previous = _previous_run(folder) if config.get("resume") else None
        artifacts = None if c.tracking_uri else (folder / "artifacts").resolve().as_uri()
        _experiment(uri, c.project, artifacts)
        self.lightning = OffsetMLflowLogger(
            experiment_name=c.project, run_name=c.name or identity.name, tracking_uri=uri,
            tags=None if previous else self._tags(identity), artifact_location=artifacts, run_id=previous)
        self.uri, self.local = uri, c.tracking_uri is None
        run_id = self.lightning.run_id  # starts the run now, so it exists even if training fails
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_ID_FILE).write_text(run_id + "\n")
        if not previous:  # MLflow's parameters cannot change; a resumed run has them already
            self.lightning.log_hyperparams(config)

    def _tags(self, identity: RunIdentity) -> Dict[str, str]:
        c = self.settings
        found = {t: "true" for t in tags(identity.tags, c.tags)}
        found.update({k: str(v) for k, v in (("group", c.group or identity.group),
                                             ("job_type", c.job_type or identity.job_type),
                                             ("sweep", identity.sweep)) if v})
        return found

    def log_summary(self, metrics: Dict[str, float]) -> None:
        if self.lightning is not None:
            self.log_metrics(final_metrics(metrics), step=self.last_step)

    def log_files(self, run_dir: Path, written: Dict[str, Any]) -> None:
        """results.json and the run's plots as the run's artifacts; a failure only warns."""
        if self.lightning is None:
            return
        try:
            for path in [Path(run_dir) / "results.json", *sorted(Path(run_dir).glob("*.png"))]:
                if path.is_file():
                    self.lightning.experiment.log_artifact(self.lightning.run_id, str(path))
        except Exception as exc:  # noqa: BLE001 - results.json and the plots are on disk all the same
            log.warning("could not log the run's files to MLflow: %s", exc)

    def finish(self, failed: bool, error: Optional[str] = None) -> None:
        if self.lightning is None:
            return
        if error:
            self.lightning.experiment.set_tag(self.lightning.run_id, "error", error[:ERROR_MAX])
        self.lightning.finalize("failed" if failed else "success")

    @property
    def location(self) -> Optional[str]:
        """The store's folder when it is local, else its URI."""
        if self.lightning is None:
            return None
        return str(Path(self.uri[len("sqlite:///"):]).parent) if self.local else self.uri

    @property
    def run_id(self) -> Optional[str]:
        return self.lightning.run_id if self.lightning is not None else None


def _experiment(uri: str, name: str, artifacts: Optional[str]) -> None:
    """Make the experiment when the store has none of that name (a new run folder's store never has): what
    Lightning would do, with a warning each time. The store's own set-up lines stay out of the run's log."""
    from mlflow.tracking import MlflowClient

    for noisy in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    client = MlflowClient(uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=artifacts)


def _previous_run(folder: Path) -> Optional[str]:
    try:
        return (folder / RUN_ID_FILE).read_text().strip() or None
    except OSError:
        return None
