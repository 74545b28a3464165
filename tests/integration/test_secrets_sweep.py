"""No credential reaches the files or the console of a whole sweep run by the CLI (W&B offline, binary
files included)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.cli import ftexp, offline_runs, small
from tests.helpers.fake_secrets import URL, WANDB_KEY


@pytest.mark.slow
def test_a_sweep_keeps_every_secret_out_of_its_files_and_console(data_dir, cache_dir, tmp_path):
    """Two jobs with W&B offline: one secret passed as a tag, two read with ${oc.env:...}, whatever their
    names; none of them in any file of the sweep (binary too: the .wandb files) or on the console."""
    from tests.helpers.wandb_records import wandb_run_record

    env = {"WANDB_API_KEY": WANDB_KEY, "HF_TOKEN": "hf_Sweep0Secret1", "OPENAI_API_KEY": "sk-Sweep2Secret3",
           "DATABASE_URL": URL}
    proc = ftexp("-m", *small(data_dir, cache_dir), "data.n_train=16", "data.n_test=8", "seed=0,1",
                 f"hydra.sweep.dir={tmp_path}",
                 "tags=[hf_Sweep0Secret1,${oc.env:DATABASE_URL}]", "logger.group=${oc.env:OPENAI_API_KEY}",
                 env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [Path(root) / name for root, _, names in os.walk(tmp_path) for name in names]
    assert tmp_path / "multirun.yaml" in files and len([f for f in files if f.suffix == ".wandb"]) == 2
    for secret in env.values():
        leaks = [str(f.relative_to(tmp_path)) for f in files if secret.encode() in f.read_bytes()]
        assert not leaks, f"{secret} found in {leaks}"
        assert secret not in proc.stdout + proc.stderr
    assert "#0 : " in proc.stdout and "tags=[<redacted>," in proc.stdout  # Hydra's job line, redacted
    run = wandb_run_record(offline_runs(tmp_path / "0")[0])
    assert run.run_group == "<redacted>" and list(run.tags)[0] == "<redacted>"  # the tags, then the sweep's
    assert [t for t in run.tags if t.startswith("swept:")] == ["swept:seed"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["swept"] == {"seed": 0}  # still read from the scrubbed multirun.yaml
