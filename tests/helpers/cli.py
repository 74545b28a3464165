"""ftexp run as a user runs it: ``python -m ftexp`` in a subprocess, or composed and run in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import TINY


def ftexp(*args, env_extra=None, timeout=600):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "ftexp", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def small(data_dir, cache_dir, logger="wandb"):
    """A tiny run's overrides on the command line, with W&B (offline) unless told another logger."""
    return [*TINY, f"logger={logger}", f"data_dir={data_dir}", f"cache_dir={cache_dir}"]


def offline_runs(run_dir: Path):
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def compose_and_run(overrides):
    """The config and what run_job returns, in this process."""
    from ftexp.config.preflight import compose_config
    from ftexp.job import run_job

    cfg = compose_config(overrides)
    return cfg, run_job(cfg)
