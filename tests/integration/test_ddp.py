"""DDP on CPU (trainer=ddp_cpu: two gloo processes) from the command line, as users run it (slow tier).

Lightning starts rank 1 by re-running a command; under ``-m`` its own command re-ran the whole sweep
in a second timestamped folder. These tests run from an empty working directory with the default
output folders, so any stray folder or extra result shows.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from tests.helpers import TINY, checkout_env

pytestmark = pytest.mark.slow

BASE = [*TINY, "logger=wandb", "trainer.max_epochs=2", "save_model=false"]


def ftexp(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = checkout_env(WANDB_MODE="offline", WANDB_SILENT="true")
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "ftexp", *args], capture_output=True, text=True, timeout=900,
                          env=env, cwd=cwd)


def folders(root: Path) -> List[Path]:
    """Every run folder Hydra made under ``root`` (outputs/<date>/<time>, multirun/<date>/<time>)."""
    return sorted(p for p in root.glob("*/*") if p.is_dir())


def results(job: Path):
    return json.loads((job / "results.json").read_text())


def test_ddp_single_run_and_two_job_sweep_give_one_folder_and_result_per_job(data_dir, cache_dir, tmp_path):
    # 225 = 7 x 32 + 1: each epoch ends on a one-row batch, which rank 1 computes on but must not learn from
    common = [*BASE, "data.n_train=225", f"data_dir={data_dir}", f"cache_dir={cache_dir}"]
    single = ftexp(tmp_path / "single", *common, "trainer=cpu")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = ftexp(tmp_path / "ddp", *common, "trainer=ddp_cpu")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    sweep = ftexp(tmp_path / "sweep", "-m", *common, "trainer=ddp_cpu", "seed=0,1")
    assert sweep.returncode == 0, sweep.stderr[-3000:]

    [ref_dir] = folders(tmp_path / "single" / "outputs")
    [ddp_dir] = folders(tmp_path / "ddp" / "outputs")
    assert not (tmp_path / "ddp" / "multirun").exists()
    [sweep_dir] = folders(tmp_path / "sweep" / "multirun")  # one sweep folder, not one per rank
    assert not (tmp_path / "sweep" / "outputs").exists()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job in [ddp_dir, *jobs]:
        res = results(job)
        assert res["status"] == "completed" and res["stages"][0]["world_size"] == 2
        [run] = (job / "wandb").glob("offline-run-*")  # one W&B run per job, not per rank
        assert (run / "files" / "output.log").stat().st_size > 0  # rank 0's console, captured
        assert (job / "rank_1.log").is_file()  # rank 1 ran this job, in this folder
    assert [results(j)["seed"] for j in jobs] == [0, 1]
    for key in ("train/loss", "val/loss"):  # the sweep's seed-0 job is the single DDP run (seed 0)
        assert results(jobs[0])["stages"][0][key] == results(ddp_dir)["stages"][0][key], key
    assert results(jobs[1])["stages"][0]["train/loss"] != results(ddp_dir)["stages"][0]["train/loss"]

    # The same global batches, split over two ranks, with the loss a mean over the global batch's
    # tokens: the run follows the single-process one up to float summation order.
    ref, dist = results(ref_dir), results(ddp_dir)
    assert dist["stages"][0]["steps"] == ref["stages"][0]["steps"]
    for key in ("train/loss", "val/loss"):
        assert math.isclose(dist["stages"][0][key], ref["stages"][0][key], rel_tol=1e-5), key
    assert dist["rows"][-1]["metrics"]["banking77"]["test/accuracy"] == ref["metrics"]["test/accuracy"]
    # Tokens summed over the ranks, the lent row (computed by rank 1, learnt from once) counted once
    assert dist["stages"][0]["effective_tokens"] == ref["stages"][0]["effective_tokens"]
    assert dist["stages"][0]["tokens"] > ref["stages"][0]["tokens"]  # ... though computed twice


@pytest.mark.parametrize("mitigation", [["mitigation=ewc", "mitigation.fisher_samples=32", "mitigation.fisher_batch_size=8"],
                                        ["mitigation=lwf"]], ids=["ewc", "lwf"])
def test_ddp_two_stage_mitigated_run_matches_the_single_process_one(data_dir, cache_dir, tmp_path, mitigation):
    """ewc: the Fisher from each rank's share of the samples, reduced over ranks, and the penalty it
    drives in stage 2; lwf: the teacher and the distillation term on each rank. The same numbers as one
    process, up to float summation order. (Here the ranks' token counts are close enough that weighting
    the distillation term by them moves the losses less than that order does: test_lwf pins it.)"""
    common = [a for a in BASE if a != "logger=wandb"] + [
        "logger=none", "experiment=forgetting", *mitigation, "data.n_train=154", "data.n_test=40", "tasks.cuad.n_train=152",
        "tasks.cuad.n_test=40", "tasks.general.n_train=20", "tasks.general.n_test=5",
        f"data_dir={data_dir}", f"cache_dir={cache_dir}"]
    for name, trainer in (("one", "trainer=cpu"), ("two", "trainer=ddp_cpu")):
        done = ftexp(tmp_path / name, *common, trainer, f"hydra.run.dir={tmp_path / name / 'run'}")
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (results(tmp_path / n / "run") for n in ("one", "two"))
    assert [s["world_size"] for s in two["stages"]] == [2, 2]
    for a, b in zip(one["stages"], two["stages"]):
        assert a["steps"] == b["steps"]
        for key in ("train/loss", "val/loss"):
            assert math.isclose(a[key], b[key], rel_tol=1e-4), (key, a[key], b[key])
    general = [row["metrics"]["general"]["test/loss"] for row in one["rows"]]
    assert all(math.isclose(x, y, rel_tol=1e-4)
               for x, y in zip(general, [row["metrics"]["general"]["test/loss"] for row in two["rows"]]))


def test_ddp_child_rank_composes_the_config_chosen_on_the_command_line(data_dir, cache_dir, tmp_path):
    """A primary config and a model that exist only in a --config-dir folder: rank 1 must compose
    the same config as rank 0 (it used to compose ftexp's default config, and fail or train on
    something else)."""
    extra = tmp_path / "extra"
    (extra / "model").mkdir(parents=True)
    (extra / "model" / "tiny_extra.yaml").write_text("defaults:\n  - tiny\n  - _self_\nhidden_size: 32\n")
    (extra / "myrun.yaml").write_text("defaults:\n  - config\n  - override model: tiny_extra\n  - _self_\nseed: 3\n")
    common = [a for a in BASE if a != "logger=wandb"] + ["logger=none", "trainer.max_epochs=1",
                                                          f"data_dir={data_dir}", f"cache_dir={cache_dir}"]
    runs = {}
    for name, head in (("extra", ["--config-dir", str(extra), "--config-name", "myrun"]),
                       ("plain", ["model=tiny", "seed=3"])):
        done = ftexp(tmp_path / name, *head, *common, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / name / 'run'}")
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = results(tmp_path / name / "run")
    assert runs["extra"]["seed"] == 3
    for key in ("train/loss", "val/loss"):  # both ranks seed 3: the same run as the plain command line's
        assert runs["extra"]["stages"][0][key] == runs["plain"]["stages"][0][key], key
