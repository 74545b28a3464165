"""Several loggers at once: the list syntax's config, the composite tracker's fan-out, and TensorBoard's and
MLflow's trackers on their own (steps, final metrics, status), without a training run."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ftexp.config.preflight import check_overrides, compose_config
from ftexp.config.session import ConfigError
from ftexp.tracking.identity import RunIdentity
from ftexp.tracking.loggers import Loggers, NoLogger, WandbLogger
from ftexp.utils.build import build


class Recorder(NoLogger):
    """A tracker that notes every call it gets."""

    def __init__(self, name, calls, where=None, fail_finish=False):
        super().__init__(None)
        self.name, self.calls, self.where, self.fail_finish = name, calls, where, fail_finish

    def start(self, run_dir, config, identity):
        self.calls.append((self.name, "start", config["seed"]))
        self.lightning = f"lightning-{self.name}"

    def set_step_offset(self, steps):
        self.calls.append((self.name, "offset", steps))

    def log_metrics(self, metrics, step):
        self.calls.append((self.name, "metrics", dict(metrics), step))

    def log_summary(self, metrics):
        self.calls.append((self.name, "summary", dict(metrics)))

    def log_files(self, run_dir, written):
        self.calls.append((self.name, "files", written["status"]))

    def finish(self, failed, error=None):
        self.calls.append((self.name, "finish", failed, error))
        if self.fail_finish:
            raise RuntimeError(f"{self.name} cannot close")

    @property
    def location(self):
        return self.where


def test_the_composite_passes_every_call_to_every_logger_in_order(tmp_path):
    calls = []
    tracker = Loggers(None, trackers=[Recorder("a", calls, where="/a"), Recorder("b", calls)])
    tracker.start(tmp_path, {"seed": 3}, RunIdentity(name="r"))
    assert tracker.lightning == ["lightning-a", "lightning-b"]  # the Trainer gets both
    tracker.set_step_offset(8)
    tracker.log_metrics({"eval/x": 1.0}, step=9)
    tracker.log_files(tmp_path, {"status": "completed"})
    tracker.log_summary({"test/accuracy": 0.5})
    tracker.finish(failed=True, error="E")
    assert calls == [
        ("a", "start", 3), ("b", "start", 3), ("a", "offset", 8), ("b", "offset", 8),
        ("a", "metrics", {"eval/x": 1.0}, 9), ("b", "metrics", {"eval/x": 1.0}, 9),
        ("a", "files", "completed"), ("b", "files", "completed"),
        ("a", "summary", {"test/accuracy": 0.5}), ("b", "summary", {"test/accuracy": 0.5}),
        ("a", "finish", True, "E"), ("b", "finish", True, "E")]
    # results.json names the loggers that keep the run somewhere
    assert tracker.records() == [{"type": "Recorder", "dir": "/a", "id": None}]
    assert tracker.location == "/a"


def test_one_logger_gives_the_trainer_that_logger_and_none_gives_it_nothing(tmp_path):
    one = Loggers(None, trackers=[Recorder("a", [])])
    one.start(tmp_path, {"seed": 0}, RunIdentity(name="r"))
    assert one.lightning == "lightning-a"
    empty = Loggers(None, trackers=[NoLogger(None)])
    empty.start(tmp_path, {"seed": 0}, RunIdentity(name="r"))
    assert empty.lightning is None and empty.location is None and empty.records() == []


def test_every_logger_is_closed_when_one_fails_to_close(tmp_path):
    calls = []
    tracker = Loggers(None, trackers=[Recorder("a", calls, fail_finish=True), Recorder("b", calls)])
    with pytest.raises(RuntimeError, match="a cannot close"):
        tracker.finish(failed=False)
    assert [c[0] for c in calls if c[1] == "finish"] == ["a", "b"]


def test_the_wandb_run_is_the_one_results_json_names_first():
    wandb = WandbLogger(None)
    wandb.run = type("Run", (), {"dir": "/r/wandb/offline-run-1-abc/files", "id": "abc"})()
    tracker = Loggers(None, trackers=[Recorder("tb", [], where="/r/tensorboard"), wandb])
    assert tracker.primary is wandb and (tracker.location, tracker.run_id) == ("/r/wandb/offline-run-1-abc", "abc")
    assert [r["type"] for r in tracker.records()] == ["Recorder", "WandbLogger"]


# ------------------------------------------------------------------------------------- the config


def test_a_list_of_logger_options_puts_each_under_its_name_and_keeps_the_shared_keys():
    cfg = compose_config(["logger=[tensorboard,wandb]", "logger.project=p", "logger.group=g"])
    assert list(cfg.logger.backends) == ["tensorboard", "wandb"]
    assert [OmegaConf.get_type(b).__name__ for b in cfg.logger.backends.values()] == [
        "TensorBoardLoggerConfig", "WandbLoggerConfig"]
    assert (cfg.logger.project, cfg.logger.group) == ("p", "g")
    tracker = build(cfg.logger)
    assert [type(t).__name__ for t in tracker.trackers] == ["TensorBoardLogger", "WandbLogger"]
    assert all(t.settings.project == "p" for t in tracker.trackers)  # each names the run the same way


@pytest.mark.parametrize("option,target", [("wandb", "WandbLogger"), ("csv", "CSVLogger"), ("none", "NoLogger"),
                                           ("mlflow", "MLflowLogger"), ("tensorboard", "TensorBoardLogger")])
def test_a_single_logger_is_chosen_as_before(option, target, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = compose_config([f"logger={option}", "logger.project=myproj"])
    assert list(cfg.logger.backends) == [option] and cfg.logger.backends[option]._target_.endswith(target)
    assert cfg.logger.project == "myproj" and cfg.logger.mode == "disabled"  # WANDB_MODE, as before
    check_overrides([f"logger={option}", "logger.project=myproj"])


@pytest.mark.parametrize("line,words", [
    ("logger=[none,csv]", ["logger=none means no logger", "logger=[csv]"]),
    ("logger=[wandb,csv,wandb]", ["logger=[wandb,csv,wandb]", "wandb is chosen more than once"]),
    ("logger=[tensorboard,tb]", ["'tb' is not an option", "mlflow, none, tensorboard, wandb"]),
])
def test_a_bad_combination_of_loggers_is_refused_before_the_run(line, words):
    with pytest.raises(ConfigError) as err:
        check_overrides([line])
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_logger_whose_package_is_missing_is_refused_with_the_extra_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"logger=mlflow needs the mlflow package: pip install 'ftexp\[mlflow\]'"):
        check_overrides(["logger=[csv,mlflow]"])


# ------------------------------------------------------------------ TensorBoard and MLflow alone


def _settings(**kw):
    return compose_config(["logger=[tensorboard,mlflow]", *[f"logger.{k}={v}" for k, v in kw.items()]]).logger


def test_tensorboard_shifts_stage_steps_and_writes_the_final_metrics_at_the_last_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ftexp.tracking.backends import TensorBoardLogger

    tracker = TensorBoardLogger(None, _settings())
    tracker.start(tmp_path, {"seed": 0, "trainer": {"max_epochs": 2}}, RunIdentity(name="r"))
    tracker.lightning.log_metrics({"train/loss": 2.0}, step=3)  # stage 1, as the Trainer logs it
    tracker.set_step_offset(10)
    tracker.lightning.log_metrics({"train/loss": 1.0}, step=3)  # stage 2: step 3 of the stage is step 13
    tracker.log_metrics({"eval/test/accuracy": 0.7}, step=14)  # a row: already run-wide
    tracker.log_summary({"test/accuracy": 0.7, "test/label": "x"})
    tracker.finish(failed=False)
    assert tracker.location == str(tmp_path / "tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    steps = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert steps["train/loss"] == [(3, 2.0), (13, 1.0)]
    assert steps["eval/test/accuracy"] == [(14, pytest.approx(0.7))]
    assert steps["final/test/accuracy"] == [(14, pytest.approx(0.7))] and "final/test/label" not in steps
    assert "max_epochs: 2" in (tmp_path / "tensorboard" / "hparams.yaml").read_text()
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")  # the HParams tab


def test_mlflow_names_tags_and_closes_the_run_failed_with_its_error(tmp_path):
    from mlflow.tracking import MlflowClient

    from ftexp.tracking.backends import MLflowLogger

    tracker = MLflowLogger(None, _settings(project="exp1", tags="[mine]"))
    identity = RunIdentity(name="2026-12-07/10-00-00", group="g1", job_type="run", tags=["sweep:s/1"])
    tracker.start(tmp_path, {"seed": 5, "optim": {"lr": 0.001}}, identity)
    tracker.set_step_offset(4)
    tracker.lightning.log_metrics({"train/loss": 3.0}, step=1)
    tracker.finish(failed=True, error="DataError: no rows")
    client = MlflowClient(f"sqlite:///{Path(tracker.location) / 'mlflow.db'}")
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "DataError: no rows"
    assert client.get_experiment(run.info.experiment_id).name == "exp1"
    assert run.info.run_name == "2026-12-07/10-00-00"
    assert {k: run.data.tags[k] for k in ("mine", "sweep:s/1", "group", "job_type")} == {
        "mine": "true", "sweep:s/1": "true", "group": "g1", "job_type": "run"}
    assert run.data.params["optim/lr"] == "0.001" and run.data.params["seed"] == "5"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")] == [(5, 3.0)]


def test_a_resumed_job_continues_its_own_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from ftexp.tracking.backends import MLflowLogger

    first = MLflowLogger(None, _settings())
    first.start(tmp_path, {"seed": 1, "resume": False}, RunIdentity(name="r"))
    first.lightning.log_metrics({"train/loss": 2.0}, step=1)  # then the job is killed: the run is never closed
    again = MLflowLogger(None, _settings())
    again.start(tmp_path, {"seed": 1, "resume": True}, RunIdentity(name="r"))  # params unchanged: MLflow's rule
    again.lightning.log_metrics({"train/loss": 1.0}, step=2)
    again.finish(failed=False)
    assert again.run_id == first.run_id
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    assert client.get_run(again.run_id).info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(again.run_id, "train/loss")] == [(1, 2.0), (2, 1.0)]
    assert len(client.search_runs([client.get_run(again.run_id).info.experiment_id])) == 1
