"""A sweep opens in W&B already compared: read from the offline run files of a real 2 arms x 2 seeds sweep of a
two-stage experiment (slow tier)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.helpers.cli import ftexp, offline_runs, small
from tests.helpers.wandb_records import wandb_records

pytestmark = pytest.mark.slow

# E3 (Banking77, then CUAD; continual.png and the matrix R) on the tiny model, a few examples per task.
TWO_STAGES = ["experiment=forgetting", "data.n_test=16", "tasks.cuad.n_train=64", "tasks.cuad.n_test=16",
              "tasks.general.n_train=8", "tasks.general.n_test=4", "save_model=false", "cache_stages=false"]


def read_run(job: Path) -> Dict[str, Any]:
    """What the job's offline W&B run recorded: group, job type, tags, config, history keys, console lines.
    (wandb 0.31 reads .wandb files only in its Go core: the records come from tests.helpers.wandb_records.)"""
    [folder] = offline_runs(job)
    out: Dict[str, Any] = {"history": {}, "output": [], "folder": folder}
    for record in wandb_records(folder):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(group=run.run_group, job_type=run.job_type, tags=list(run.tags),
                       config={u.key: json.loads(u.value_json) for u in run.config.update})
        elif kind == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                out["history"][key] = json.loads(item.value_json)
        elif kind in ("output", "output_raw"):
            out["output"].append(getattr(record, kind).line)
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
        assert run["history"]["plots/continual/_type"] == "image-file"
        assert run["history"]["cl/matrix/_type"] == "table-file"
        assert run["history"]["cl/matrix/nrows"] == len(res["continual"]["R"]) == 3  # base and the two stages
        assert run["history"]["cl/matrix/ncols"] == 1 + len(res["continual"]["tasks"])

        # the console: in the run's records and its files/output.log
        console = "".join(run["output"])
        assert "row 1 (banking77)" in console
        assert "row 1 (banking77)" in (run["folder"] / "files" / "output.log").read_text()
