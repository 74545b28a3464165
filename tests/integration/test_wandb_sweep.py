"""A sweep opens in W&B already compared: read from the offline run files of a real 2 arms x 2 seeds sweep of a
two-stage experiment (slow tier)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.helpers.cli import ftexp, offline_runs, small

pytestmark = pytest.mark.slow

# E3 (Banking77, then CUAD; continual.png and the matrix R) on the tiny model, a few examples per task.
TWO_STAGES = ["experiment=forgetting", "data.n_test=16", "tasks.cuad.n_train=64", "tasks.cuad.n_test=16",
              "tasks.general.n_train=8", "tasks.general.n_test=4", "save_model=false", "cache_stages=false"]


def records(offline_run: Path) -> List[Dict[str, Any]]:
    """The records of an offline run's .wandb file as W&B's own reader gives them (``wandb leet inspect
    --json``: the Go core reads the log, one JSON record per line)."""
    [log] = offline_run.glob("run-*.wandb")
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "No such command" in done.stderr:
        pytest.skip("this wandb has no `wandb leet inspect` (0.31 has) to read a .wandb file with")
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def read_run(job: Path) -> Dict[str, Any]:
    """What the job's offline W&B run recorded: group, job type, tags, config, history, console lines."""
    [folder] = offline_runs(job)
    out: Dict[str, Any] = {"history": {}, "output": [], "folder": folder}
    for record in records(folder):
        kind = record["type"]
        if kind == "run":
            run = record["run"]
            out.update(group=run["run_group"], job_type=run["job_type"], tags=run.get("tags", []),
                       config=run["config"]["update"])
        elif kind == "history":
            out["history"].update(record["history"]["item"])
        elif kind in ("output", "output_raw"):
            out["output"].append(record[kind]["line"])
    return out


def test_a_sweep_is_split_by_arm_with_typed_values_plots_matrix_and_console(data_dir, cache_dir, tmp_path):
    proc = ftexp("-m", *small(data_dir, cache_dir), *TWO_STAGES, "model.lr=1e-3,3e-3", "data.n_train=48",
                 "seed=0,1", f"hydra.sweep.dir={tmp_path}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [read_run(tmp_path / str(i)) for i in range(4)]
    results = [json.loads((tmp_path / str(i) / "results.json").read_text()) for i in range(4)]
    sweep = f"sweep/{tmp_path.parts[-2]}/{tmp_path.parts[-1]}"

    # one W&B group per arm, whose members are the arm's seeds
    by_group: Dict[str, List[Any]] = defaultdict(list)
    for run in runs:
        by_group[run["group"]].append((run["config"]["swept"]["model.lr"], run["config"]["swept"]["seed"]))
    assert by_group == {f"{sweep}/model.lr=0.001": [(0.001, 0), (0.001, 1)],
                        f"{sweep}/model.lr=0.003": [(0.003, 0), (0.003, 1)]}
    for run, res in zip(runs, results):
        # swept values are numbers; the arm and the sweep are in the config, the sweep in a tag too
        assert isinstance(run["config"]["swept"]["model.lr"], float) and isinstance(run["config"]["swept"]["seed"], int)
        assert run["config"]["sweep"] == sweep and run["config"]["arm"] == run["group"][len(sweep) + 1:]
        assert run["job_type"] == "forgetting" and run["tags"][:2] == ["E3", "forgetting"]
        assert f"sweep:{sweep}"[:64] in run["tags"] and "swept:seed" in run["tags"]
        assert (res["logger"]["group"], res["logger"]["run_group"]) == (sweep, run["group"])
        assert res["logger"]["id"] == run["folder"].name.rsplit("-", 1)[-1]

        # the plots as images, the forgetting matrix as a table
        assert (tmp_path / res["run_dir"] / "continual.png").is_file()
        assert run["history"]["plots/continual._type"] == "image-file"
        assert run["history"]["cl/matrix._type"] == "table-file"
        assert run["history"]["cl/matrix.nrows"] == len(res["continual"]["R"]) == 3  # base and the two stages
        assert run["history"]["cl/matrix.ncols"] == 1 + len(res["continual"]["tasks"])

        # the console: in the run's records and its files/output.log
        console = "".join(run["output"])
        assert "row 1 (banking77)" in console
        assert "row 1 (banking77)" in (run["folder"] / "files" / "output.log").read_text()
