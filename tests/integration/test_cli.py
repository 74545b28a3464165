"""`python -m ftexp` in a subprocess, as a user runs it (slow tier)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers.cli import ftexp, offline_runs, small
from tests.helpers.wandb_records import wandb_run_record

pytestmark = pytest.mark.slow


def wandb_exit_code(offline_run: Path) -> int:
    """The exit code the run was closed with, as the W&B client logged it."""
    match = re.search(r"got exitcode: (-?\d+)", (offline_run / "logs" / "debug.log").read_text())
    assert match, "the W&B run was never finished"
    return int(match.group(1))


def test_single_run_writes_results_and_an_offline_wandb_run(data_dir, cache_dir, tmp_path):
    proc = ftexp(*small(data_dir, cache_dir), f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "completed" and "test/accuracy" in res["metrics"]
    runs = offline_runs(tmp_path)
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert wandb_exit_code(runs[0]) == 0
    assert res["logger"]["dir"] == str(runs[0])
    # a single run is a group of its own (its review joins it there); its console is in the Logs tab
    assert wandb_run_record(runs[0]).run_group == res["logger"]["group"] == res["logger"]["run_group"]
    assert "banking77" in (runs[0] / "files" / "output.log").read_text()  # the log lines of the run
    assert f"results: {tmp_path / 'results.json'}" in proc.stdout
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


def test_multirun_gives_each_job_its_folder_results_and_wandb_run(data_dir, cache_dir, tmp_path):
    proc = ftexp("-m", *small(data_dir, cache_dir), "trainer.max_epochs=1,2", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    epochs, run_ids = [], set()
    for job in jobs:
        res = json.loads((job / "results.json").read_text())
        assert res["status"] == "completed" and res["run_dir"] == str(job)
        epochs.append(res["config"]["trainer"]["max_epochs"])
        assert res["stages"][0]["epochs"] == res["config"]["trainer"]["max_epochs"]
        runs = offline_runs(job)
        assert len(runs) == 1
        run_ids.add(runs[0].name.rsplit("-", 1)[-1])
    assert epochs == [1, 2] and len(run_ids) == 2  # one W&B run per job, not one for the sweep


def test_a_failing_job_does_not_stop_the_sweep_and_resume_skips_completed_jobs(data_dir, cache_dir, tmp_path):
    args = ["-m", *small(data_dir, cache_dir), "data.n_train=60,99999", f"hydra.sweep.dir={tmp_path}"]
    proc = ftexp(*args)
    assert proc.returncode != 0  # the sweep says that a job failed ...
    done, failed = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("0", "1"))
    assert done["status"] == "completed"  # ... but the other job ran (failures do not stop a sweep)
    assert failed["status"] == "failed" and "n_train" in failed["error"]["message"]
    # W&B: each arm of the sweep is a group (sweep name and time, then the arm); the sweep is in the
    # config and a tag (results.json's logger.group: what compare --group takes); no experiment: job type
    # "sweep"; the swept keys are in the config, flat and typed
    run = wandb_run_record(offline_runs(tmp_path / "0")[0])
    sweep = f"sweep/{tmp_path.parts[-2]}/{tmp_path.parts[-1]}"
    assert run.run_group == f"{sweep}/data.n_train=60" == done["logger"]["run_group"]
    assert done["logger"]["group"] == sweep and f"sweep:{sweep}"[:64] in run.tags
    assert run.job_type == "sweep"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["swept"] == {"data.n_train": 60} and config["data"]["n_train"] == 60
    assert (config["sweep"], config["arm"]) == (sweep, "data.n_train=60")
    assert wandb_exit_code(offline_runs(tmp_path / "1")[0]) == 1

    stamp = (tmp_path / "0" / "results.json").stat().st_mtime_ns
    again = ftexp(*args, "resume=true")
    assert "is completed; skipping this job" in again.stdout
    assert (tmp_path / "0" / "results.json").stat().st_mtime_ns == stamp  # the finished job was not re-run
    assert len(offline_runs(tmp_path / "0")) == 1
    assert json.loads((tmp_path / "1" / "results.json").read_text())["status"] == "failed"  # re-ran, failed again


def test_a_failing_run_exits_nonzero_with_one_paragraph_and_a_failed_record(data_dir, cache_dir, tmp_path):
    proc = ftexp(*small(tmp_path / "nowhere", cache_dir), f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1
    assert "ftexp: error: data 'banking77'" in proc.stderr and "FTEXP_DATA_DIR" in proc.stderr
    assert "Traceback" not in proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed"
    assert wandb_exit_code(offline_runs(tmp_path)[0]) == 1  # marked failed, not finished


def test_a_malformed_data_file_fails_the_job_naming_file_and_line(cache_dir, tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "test.jsonl").write_text('{"text": "where is my card", "label": "card_arrival"}\n')
    (folder / "train.jsonl").write_text('{"text": "card please", "label": "card_arrival"}\n{"text": 7, "label": "x"}\n')
    run_dir = tmp_path / "run"
    proc = ftexp(*small(tmp_path, cache_dir, logger="none"), "data=own", f"data.path={folder}",
                 f"hydra.run.dir={run_dir}")
    assert proc.returncode == 1
    assert f"{folder / 'train.jsonl'}, line 2: field 'text' must be a string" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"
    assert (folder / "train.jsonl").is_file()  # the user's file is untouched


def test_the_sweep_files_run_as_multiruns(data_dir, cache_dir, tmp_path):
    """sweeps=dataset_size with its sizes overridden small: one job per size, each its own results."""
    proc = ftexp("-m", *small(data_dir, cache_dir, logger="none"), "sweeps=dataset_size", "data.n_train=77,154", "seed=0",
                 "data.slices=[]", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sizes = []
    for job in sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit()):
        res = json.loads((job / "results.json").read_text())
        assert res["status"] == "completed" and "E2" in res["config"]["tags"]
        sizes.append(res["data"]["counts"]["train"]["by_origin"]["real"])
    assert sizes == [77, 154]


def test_a_ddp_child_rank_gets_the_command_lines_choice_of_config():
    from ftexp.training.launch import config_choice

    argv = ["-m", "--config-dir", "/x/confs", "-cn", "myrun", "seed=1,2", "hydra.searchpath=[file:///y]",
            "+hydra.job.chdir=false", "model=tiny"]
    assert config_choice(argv) == ["--config-name", "myrun", "--config-dir", "/x/confs", "hydra.searchpath=[file:///y]"]
    assert config_choice(["--config-path", "rel/confs", "model=tiny"]) == ["--config-path", "rel/confs"]
    assert config_choice(["model=tiny", "seed=2"]) == []
