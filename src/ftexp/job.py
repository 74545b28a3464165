"""The task wrapper around one run: output folder, logger, results.json, failure handling.

Whatever happens, the job ends with a results.json that says ``completed`` or ``failed`` (with the
error), the W&B run closed with the matching exit code, and the process group torn down and the
distributed environment restored, so the next job of a multirun starts clean. Only rank 0 writes
files and talks to the tracker.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from ftexp.config.validate import problems as value_problems
from ftexp.errors import FtexpError, JobFailed
from ftexp.record import RunRecord
from ftexp.run import run
from ftexp.training import checkpoints
from ftexp.tracking.identity import single_identity, sweep_identity
from ftexp.tracking.loggers import NoLogger, RunIdentity
from ftexp.tracking.results import RESULTS_FILE, environment, now
from ftexp.tracking.results_file import ResultsFile
from ftexp.tracking.summary import print_summary
from ftexp.utils.build import build, typed
from ftexp.utils.devices import process_device
from ftexp.utils.run_folder import RunFolderError, run_folder_lock
from ftexp.utils.secrets import (install_log_filter, redact, redacted_argv, referenced_secrets, remove_log_filter,
                                 scrub_files, secret_values)

log = logging.getLogger(__name__)

DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
            "LOCAL_WORLD_SIZE")


def global_rank() -> int:
    """This process's rank as launchers announce it (0 when not distributed), in Lightning's order: a
    process that Lightning started inside an interactive SLURM shell (``srun --pty bash``) inherits
    SLURM_PROCID=0 but has its own LOCAL_RANK."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def hydra_info() -> Dict[str, Any]:
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {
        "overrides": list(hc.overrides.task),
        "choices": {k: v for k, v in hc.runtime.choices.items() if not k.startswith(("hydra", "schema"))},
        "job_num": hc.job.get("num"),
    }


def run_identity(run_dir: Path, tags: Optional[List[str]] = None) -> RunIdentity:
    """Name the tracker run after its folder (see :mod:`ftexp.tracking.identity`): a sweep's jobs are
    grouped per arm (the swept values but the seed), seeds as the group's replicates; the sweep's name
    (its sweep file, else "sweep") and time tag every job; job_type is the experiment, else sweep or run."""
    experiment = HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None
    if not multirun_mode():
        return single_identity(run_dir, experiment, tags)
    hc = HydraConfig.get()
    sweep = f"{hc.runtime.choices.get('sweeps') or 'sweep'}/{'/'.join(Path(hc.sweep.dir).parts[-2:])}"
    own = dict(o.split("=", 1) for o in hc.overrides.task if "=" in o)
    return sweep_identity(sweep, run_dir, experiment, own, swept_keys(hc), tags)


def swept_keys(hc: Any) -> List[str]:
    """Every key the sweep varies: swept on the command line (e.g. ``seed=0,1,2``) or in the sweep file's
    ``hydra.sweeper.params``, as the sweep's multirun.yaml recorded them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        sweep_cfg = OmegaConf.load(Path(hc.sweep.dir) / "multirun.yaml")
        texts = list(sweep_cfg.hydra.overrides.task)
        texts += [f"{k}={v}" for k, v in (sweep_cfg.hydra.sweeper.get("params") or {}).items()]
    except Exception:  # noqa: BLE001 - a launcher that writes no multirun.yaml: no swept keys to show
        return []
    parser = OverridesParser.create()
    return sorted({ov.get_key_element() for text in texts for ov in _parsed(parser, text) if ov.is_sweep_override()})


def _parsed(parser: Any, text: str) -> List[Any]:
    try:
        return parser.parse_overrides([text])
    except Exception:  # noqa: BLE001 - an override scrubbed of a secret ("<redacted>") no longer parses
        return []


class _DropTips(logging.Filter):
    """Lightning's advertising tips are noise in a run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" / "Writing shards" bars
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropTips())


@contextmanager
def distributed_scope() -> Iterator[None]:
    """Whatever the job starts (a process group, rendezvous variables) ends with it; what a
    launcher such as torchrun or SLURM set before the job is put back as it was."""
    before = {name: os.environ.get(name) for name in DIST_ENV}
    try:
        yield
    finally:
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextmanager
def log_filter_scope(log_filter) -> Iterator[None]:
    """The job's secret filter comes off the log handlers when the job ends (the next job of a
    sweep installs its own)."""
    try:
        yield
    finally:
        remove_log_filter(log_filter)


def run_job(cfg: DictConfig) -> Optional[float]:
    quiet_libraries()
    run_dir = Path(cfg.output_dir)
    rank = global_rank()
    with ExitStack() as stack:
        if rank == 0:  # the other ranks of a DDP run work in rank 0's folder
            try:
                stack.enter_context(run_folder_lock(run_dir))
            except RunFolderError as exc:
                _refuse(str(exc), rank)
        return _run_locked(cfg, run_dir, rank)


def _run_locked(cfg: DictConfig, run_dir: Path, rank: int) -> Optional[float]:
    # Credentials (secret-named environment variables, config values read from them) never reach
    # results.json, the saved Hydra config, the logs or W&B.
    secrets = secret_values(extra=referenced_secrets(OmegaConf.to_container(cfg, resolve=False)))
    resolved = redact(OmegaConf.to_container(cfg, resolve=True), secrets)
    found = value_problems(cfg)  # the command line's pre-flight checked them too; a Python caller's config too
    if found:
        _refuse(redact("bad config values: " + "; ".join(found), secrets), rank)
    done = _check_folder(cfg, run_dir, resolved, rank)
    if done is not None:  # resume=true, and the job finished before
        return done["metrics"].get(cfg.objective) if cfg.objective else None
    _refuse_if_no_gpu(cfg.trainer, rank)
    if rank == 0:
        _prepare_folder(cfg, run_dir, resolved)
    log_filter = install_log_filter(secrets)
    if rank == 0:
        scrub_files(run_dir / ".hydra", secrets)
        if multirun_mode():  # the sweep's multirun.yaml, which Hydra's launcher wrote before the jobs
            scrub_files(Path(HydraConfig.get().sweep.dir), secrets)
    results = ResultsFile(run_dir, cfg.data.name, secrets, {
        "status": "running", "run_dir": str(run_dir), "seed": cfg.seed, "started_at": now(),
        **redact(hydra_info(), secrets), "config": resolved, "environment": environment()})
    tracker = build(redact(typed(cfg.logger), secrets)) if rank == 0 else NoLogger(None)  # its name, group, tags
    record = RunRecord()
    with distributed_scope(), log_filter_scope(log_filter):
        try:
            identity = redact(run_identity(run_dir, list(cfg.tags)), secrets)
            results.link(cfg.logger.get("group"), identity)
            with redacted_argv(secrets):
                tracker.start(run_dir, {**resolved, **identity.config()}, identity)
            run(cfg, run_dir, tracker, record, rank=rank)
        except BaseException as exc:
            if rank == 0:
                results.write(record, tracker, error=exc)
            _fail(exc, tracker, run_dir, secrets, rank)
    if rank != 0:
        tracker.finish(failed=False)
        return None
    written = results.write(record, tracker)
    checkpoints.remove(run_dir)  # only an interrupted job needs them
    tracker.log_files(run_dir, written)
    tracker.log_summary(written["metrics"])
    tracker.finish(failed=False)
    print_summary(written, cfg.objective)
    return written["metrics"].get(cfg.objective) if cfg.objective else None


def _check_folder(cfg: DictConfig, run_dir: Path, resolved: Dict[str, Any], rank: int) -> Optional[Dict[str, Any]]:
    """Refuse a folder whose run must be left as it is; under ``resume``, the completed run's results
    (the job is skipped) or None (it continues or starts)."""
    done = completed_results(run_dir)
    damaged = unreadable_results(run_dir)
    if damaged and not cfg.overwrite:
        _refuse(f"{run_dir / RESULTS_FILE} cannot be read ({damaged}): it may be what is left of a completed run, "
                f"which a new run would replace. Look at it; then overwrite=true runs again in this folder, or "
                f"start this run in another hydra.run.dir / hydra.sweep.dir", rank)
    if cfg.resume:
        # Every rank checks (none waits for the others); the earlier run's files stay as they are.
        _refuse_if_changed(run_dir, done["config"] if done else checkpoints.saved_config(run_dir), resolved, rank)
        if done is not None:  # a re-run sweep skips the jobs that finished
            if rank == 0:
                print(f"ftexp: resume: {run_dir / RESULTS_FILE} is completed; skipping this job")
            return done
        if rank == 0 and not (run_dir / checkpoints.FOLDER).is_dir():
            print(f"ftexp: resume: no checkpoints in {run_dir}; starting from the beginning")
    elif not cfg.overwrite and done is not None:
        # Checked before anything is written: the finished run's files stay as they are.
        _refuse(f"{run_dir / RESULTS_FILE} holds a completed run; refusing to overwrite it. Use resume=true "
                f"to keep it (and skip this job), overwrite=true to run again into the same folder, or "
                f"another hydra.run.dir / hydra.sweep.dir", rank)
    return None


def _prepare_folder(cfg: DictConfig, run_dir: Path, resolved: Dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    save_hydra_files(run_dir, cfg)
    if not cfg.resume:  # an earlier run's checkpoints must not pass for this one's
        checkpoints.remove(run_dir)
    if cfg.trainer.checkpoints:  # what resume=true holds a later command line to
        checkpoints.save_config(run_dir, resolved)


def _fail(exc: BaseException, tracker: Any, run_dir: Path, secrets: List[str], rank: int) -> None:
    """Close the tracker as failed and leave the way the error calls for (always raises)."""
    tracker.finish(failed=True, error=redact(f"{type(exc).__name__}: {exc}", secrets))
    if isinstance(exc, SIGTERMException):  # Lightning's: a SystemExit with no code, i.e. exit 0
        if rank == 0:  # every rank receives it; one message
            print(f"ftexp: error: stopped by SIGTERM; resume=true (same hydra.run.dir) continues from "
                  f"the last checkpoint\nftexp: results: {run_dir / RESULTS_FILE} (status: failed)",
                  file=sys.stderr)
        raise SystemExit(143) from None
    if isinstance(exc, FtexpError):
        paragraph = (f"ftexp: error: {redact(str(exc), secrets)}\n"
                     f"ftexp: results: {run_dir / RESULTS_FILE} (status: failed)")
        if multirun_mode():
            raise JobFailed(paragraph) from None
        print(paragraph, file=sys.stderr)
        raise SystemExit(1) from None
    # Under -m an Exception is Hydra's to record: the other jobs still run, and the sweep
    # exits non-zero at the end. SystemExit or KeyboardInterrupt stop the sweep.
    raise exc


def save_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """The job's ``.hydra/`` as Hydra writes it (config.yaml, hydra.yaml, overrides.yaml); ftexp's config
    turns Hydra's own writing off (``hydra.output_subdir: null``), which would come before ftexp has
    checked that the folder holds no completed run."""
    if not HydraConfig.initialized():
        return
    from hydra.core.utils import _save_config

    hydra_cfg = HydraConfig.get()
    folder = run_dir / ".hydra"
    _save_config(cfg, "config.yaml", folder)
    _save_config(OmegaConf.create({"hydra": hydra_cfg}), "hydra.yaml", folder)
    _save_config(hydra_cfg.overrides.task, "overrides.yaml", folder)


def _refuse(message: str, rank: int) -> None:
    """Stop the job before it writes anything: one paragraph, a non-zero exit (under -m, the job fails
    and the sweep goes on)."""
    if multirun_mode():
        raise JobFailed(f"ftexp: error: {message}")
    if rank == 0:
        print(f"ftexp: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _refuse_if_no_gpu(trainer: Any, rank: int) -> None:
    """trainer=gpu/ddp/fsdp where torch sees no CUDA device: said before the model loads."""
    import torch

    if process_device(trainer).type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no device visible (CUDA_VISIBLE_DEVICES?)"
        _refuse(f"trainer.accelerator={trainer.accelerator!r} (trainer=gpu, ddp or fsdp) needs a CUDA GPU, and torch "
                f"{torch.__version__} has none ({build}). Use trainer=cpu, or trainer=ddp_cpu for data "
                f"parallelism over CPU processes.", rank)


def _refuse_if_changed(run_dir: Path, before: Optional[Dict[str, Any]], current: Dict[str, Any], rank: int) -> None:
    """resume=true continues (or skips) the run in ``run_dir`` only with the config it was started with."""
    changes = checkpoints.config_changes(before, current) if before is not None else []
    if changes:
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        _refuse(f"resume=true: {run_dir} holds a run of another config ({shown}). Resuming would join the two "
                f"into one result. Resume with the settings it was started with, or start this one in another "
                f"hydra.run.dir / hydra.sweep.dir (overwrite=true starts again in this folder).", rank)


def multirun_mode() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def completed_results(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The folder's results.json when it says ``completed`` (unreadable or failed: None)."""
    try:
        results = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) and results.get("status") == "completed" else None


def unreadable_results(run_dir: Path) -> Optional[str]:
    """Why the folder's results.json cannot be read (cut short, not a record), or None (none, or readable)."""
    path = run_dir / RESULTS_FILE
    if not path.exists():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if isinstance(results, dict) and "status" in results else "it is not a run's record"
