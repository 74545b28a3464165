"""The task wrapper around one run: output folder, logger, results.json, failure handling.

Whatever happens, the job ends with a results.json that says ``completed`` or ``failed`` (with the
error), the W&B run closed with the matching exit code, and the process group torn down, so the
next job of a multirun starts clean.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ftexp.errors import FtexpError
from ftexp.run import RunRecord, run
from ftexp.tracking.results import environment, now, write_results
from ftexp.utils.build import build

log = logging.getLogger(__name__)

DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
            "LOCAL_WORLD_SIZE")


def hydra_info() -> Dict[str, Any]:
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {
        "overrides": list(hc.overrides.task),
        "choices": {k: v for k, v in hc.runtime.choices.items() if not k.startswith(("hydra", "schema"))},
        "job_num": hc.job.get("num"),
    }


class _DropTips(logging.Filter):
    """Lightning's advertising tips are noise in a run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" / "Writing shards" bars
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropTips())


def teardown_distributed() -> None:
    """Destroy the process group and forget the rendezvous, so the next job starts clean."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    finally:
        for name in DIST_ENV:
            os.environ.pop(name, None)


def run_job(cfg: DictConfig) -> Optional[float]:
    quiet_libraries()
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started, t0 = now(), time.perf_counter()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    record = RunRecord()
    base: Dict[str, Any] = {"status": "running", "run_dir": str(run_dir), "experiment": cfg.experiment,
                            "seed": cfg.seed, "started_at": started, **hydra_info(), "config": resolved,
                            "environment": environment()}
    tracker = build(cfg.logger)
    failed = True
    try:
        tracker.start(run_dir, resolved, name=_run_name(run_dir))
        run(cfg, run_dir, tracker, record)
        failed = False
    except BaseException as exc:
        _record(run_dir, base, record, cfg, tracker, t0, error=exc)
        if isinstance(exc, FtexpError):
            print(f"ftexp: error: {exc}\nftexp: results: {run_dir / 'results.json'} (status: failed)", file=sys.stderr)
            raise SystemExit(1) from None
        raise
    finally:
        try:
            tracker.finish(failed=failed)
        finally:
            teardown_distributed()
    results = _record(run_dir, base, record, cfg, tracker, t0)
    _print_summary(results)
    return results["metrics"].get(cfg.objective) if cfg.objective else None


def _run_name(run_dir: Path) -> str:
    parts = run_dir.parts
    return "/".join(parts[-3:]) if len(parts) >= 3 else run_dir.name


def _record(run_dir, base, record: RunRecord, cfg, tracker, t0, error: Optional[BaseException] = None):
    results = dict(base)
    results.update(
        status="failed" if error is not None else "completed",
        finished_at=now(),
        metrics=record.final_metrics(cfg.data.name),
        rows=record.rows,
        stages=record.stages,
        wall_time_s={**record.wall_time_s, "total": time.perf_counter() - t0},
        **record.info,
    )
    if tracker.location:
        results["logger"] = {"type": type(tracker).__name__, "dir": tracker.location}
    if error is not None:
        results["error"] = {"type": type(error).__name__, "message": str(error),
                            "traceback": traceback.format_exception(type(error), error, error.__traceback__)[-8:]}
    write_results(run_dir, results)
    return results


def _print_summary(results: Dict[str, Any]) -> None:
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in results["metrics"].items() if isinstance(v, float))
    print(f"ftexp: {results['status']} in {results['wall_time_s']['total']:.1f}s: {metrics}")
    print(f"ftexp: results: {Path(results['run_dir']) / 'results.json'}")
    if results.get("logger"):
        print(f"ftexp: {results['logger']['type']}: {results['logger']['dir']}")
