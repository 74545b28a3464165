"""TensorBoard and W&B at once, and MLflow, from `python -m ftexp` (slow tier): each logger's own reader finds
the run's curves at the run-wide steps, the final metrics and the run's status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import ftexp, offline_runs, small

pytestmark = pytest.mark.slow


def scalars(folder: Path):
    """tag -> [(step, value)] of every TensorBoard event file in ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_and_wandb_at_once_log_both_stages_at_continuing_steps(data_dir, cache_dir, tmp_path):
    proc = ftexp(*small(data_dir, cache_dir, logger="[tensorboard,wandb]"), "experiment=forgetting",
                 f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    first, second = [s["steps"] for s in res["stages"]]
    # W&B's run is the one results.json names first (compare and the review import read it); both are listed
    [run] = offline_runs(tmp_path)
    assert list(run.glob("run-*.wandb")) and (res["logger"]["type"], res["logger"]["dir"]) == ("WandbLogger", str(run))
    assert [(x["type"], x["dir"]) for x in res["logger"]["loggers"]] == [
        ("TensorBoardLogger", str(tmp_path / "tensorboard")), ("WandbLogger", str(run))]
    assert "ftexp: TensorBoardLogger: tensorboard (in the run's folder)" in proc.stdout
    curves = scalars(tmp_path / "tensorboard")
    steps = [s for s, _ in curves["train/loss"]]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == first + second - 1
    assert any(s < first for s in steps) and any(s >= first for s in steps)  # stage 2 goes on after stage 1
    # every evaluation row at the step where it was measured: before training, after each stage
    accuracy = curves["eval/banking77/test/accuracy"]
    assert [s for s, _ in accuracy] == [0, first, first + second]
    assert accuracy[-1][1] == pytest.approx(res["rows"][-1]["metrics"]["banking77"]["test/accuracy"])
    assert curves["final/cl/acc"] == [(first + second, pytest.approx(res["metrics"]["cl/acc"]))]


def test_mlflow_holds_the_curves_and_final_metrics_finished_or_failed(data_dir, cache_dir, tmp_path):
    done, failed = tmp_path / "done", tmp_path / "failed"
    proc = ftexp(*small(data_dir, cache_dir, logger="mlflow"), "logger.project=ftexp-test",
                 f"hydra.run.dir={done}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = ftexp(*small(data_dir, cache_dir, logger="mlflow"), "data.n_train=99999", f"hydra.run.dir={failed}")
    assert bad.returncode != 0
    runs = {}
    for folder, status in ((done, "FINISHED"), (failed, "FAILED")):
        res = json.loads((folder / "results.json").read_text())
        assert res["logger"]["type"] == "MLflowLogger" and res["logger"]["dir"] == str(folder / "mlflow")
        client = client_of(folder)
        runs[status] = run = client.get_run(res["logger"]["id"])
        assert run.info.status == status
        assert client.get_experiment(run.info.experiment_id).name == ("ftexp-test" if folder == done else "ftexp")
    assert "data.n_train=99999" in runs["FAILED"].data.tags["error"]
    res, run = json.loads((done / "results.json").read_text()), runs["FINISHED"]
    history = client_of(done).get_metric_history(run.info.run_id, "train/loss")
    assert history and max(m.step for m in history) == res["stages"][0]["steps"] - 1
    assert run.data.metrics["final/test/accuracy"] == pytest.approx(res["metrics"]["test/accuracy"])
    assert run.data.metrics["final/train/loss"] == pytest.approx(res["metrics"]["train/loss"])
    assert run.data.params["trainer/max_epochs"] == str(res["config"]["trainer"]["max_epochs"])
    assert "results.json" in [a.path for a in client_of(done).list_artifacts(run.info.run_id)]


def client_of(run_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}")
