"""One run per folder, with real runs started together: a folder in use is refused, naming its holder;
default folders never collide. The lock and the folder names in one process: tests/unit/test_run_folder_lock.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY


def start(args, cwd, data_dir, cache_dir):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    small = [*TINY, "logger=csv", f"data_dir={data_dir}", f"cache_dir={cache_dir}", "trainer.enable_progress_bar=false"]
    return subprocess.Popen([sys.executable, "-m", "ftexp", *small, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_two_runs_started_together_into_one_folder_one_is_refused(data_dir, cache_dir, tmp_path):
    folder = tmp_path / "same"
    procs = [start([f"hydra.run.dir={folder}", f"seed={seed}"], tmp_path, data_dir, cache_dir) for seed in (0, 1)]
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 1], outcomes
    refused = next(err for code, err in outcomes if code == 1)
    assert f"{folder} is in use by another run (process " in refused and "Traceback" not in refused
    results = json.loads((folder / "results.json").read_text())
    saved = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
    assert results["status"] == "completed" and results["seed"] == saved["seed"]  # one run's files, not a mix


@pytest.mark.slow
def test_two_default_runs_started_together_get_two_folders(data_dir, cache_dir, tmp_path):
    procs = [start([], tmp_path, data_dir, cache_dir) for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0], [p.stderr.read()[-2000:] for p in procs]
    folders = sorted(Path(p).parent for p in tmp_path.glob("outputs/*/*/results.json"))
    assert len(folders) == 2, folders
