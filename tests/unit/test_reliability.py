"""Failures are loud and recorded; a finished run is never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftexp.config.preflight import compose_config
from tests.helpers.cli import compose_and_run


def test_a_diverging_loss_stops_the_stage_with_step_and_last_finite_loss(tiny_overrides, capsys):
    overrides = [*tiny_overrides, "optim.lr=1e6", "trainer.gradient_clip_val=0", "trainer.log_every_n_steps=1"]
    with pytest.raises(SystemExit) as exit_info:
        compose_and_run(overrides)
    assert exit_info.value.code == 1
    out = Path(compose_config(overrides).output_dir)
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "failed" and res["error"]["type"] == "TrainingDiverged"
    message = res["error"]["message"]
    assert "stage 'finetune'" in message and "NaN or infinite at step" in message and "1e+06" in message
    assert "the last finite loss was" in message or "no step had a finite loss" in message
    assert "ftexp: error: stage 'finetune'" in capsys.readouterr().err
    assert not list(out.glob("checkpoints/**/*.ckpt"))  # no checkpoint of diverged weights


def test_the_divergence_advice_follows_the_runs_settings(tiny_overrides, capsys):
    """Clipping and 32-bit precision on already: only the learning rate is left to advise."""
    overrides = [*tiny_overrides, "optim.lr=1e6", "trainer.gradient_clip_val=0.5", "trainer.precision=32-true",
                 "trainer.log_every_n_steps=1"]
    with pytest.raises(SystemExit):
        compose_and_run(overrides)
    message = capsys.readouterr().err
    assert "Try a lower learning rate (it is 1e+06); gradient clipping (trainer.gradient_clip_val=0.5) and " \
           "32-bit precision are on already" in message, message
    assert "precision=32-true (it is" not in message


def test_a_completed_run_is_not_overwritten_unless_asked(tiny_overrides, capsys):
    cfg, _ = compose_and_run(tiny_overrides)
    results = Path(cfg.output_dir) / "results.json"
    before = results.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        compose_and_run(tiny_overrides)
    assert exit_info.value.code == 1
    assert "holds a completed run; refusing to overwrite it" in capsys.readouterr().err
    assert results.read_bytes() == before  # untouched
    compose_and_run([*tiny_overrides, "resume=true"])  # skipped, still untouched
    assert results.read_bytes() == before
    compose_and_run([*tiny_overrides, "overwrite=true"])
    assert json.loads(results.read_text())["finished_at"] != json.loads(before)["finished_at"]


def test_a_target_outside_the_allow_list_is_refused_at_composition():
    from ftexp.config.preflight import ConfigError, check_overrides
    from ftexp.utils.build import BuildError, import_target

    with pytest.raises(ConfigError) as refused:
        check_overrides(["model._target_=os.system"])
    message = str(refused.value)
    assert "model._target_='os.system'" in message and "is not allowed" in message and "allowed_targets" in message
    with pytest.raises(BuildError, match="not allowed"):
        import_target("os.system")
    with pytest.raises(BuildError, match="not a class"):
        import_target("torch.optim.lr_scheduler.warnings")  # inside an allowed prefix, but no class
    assert import_target("torch.optim.AdamW").__name__ == "AdamW"
    assert import_target("collections.OrderedDict", extra=["collections.OrderedDict"]).__name__ == "OrderedDict"
    check_overrides(["allowed_targets=[collections.]"])  # a user's own addition composes


@pytest.mark.parametrize("accumulate, where, last", [
    (1, "at step 3 of the stage", "the last finite loss was 2 at step 2"),
    (2, "at step 2 (batch 3) of the stage", "the last finite loss was 2 at step 1 (batch 2)"),
])
def test_divergence_is_reported_in_optimizer_steps_under_gradient_accumulation(accumulate, where, last):
    from types import SimpleNamespace

    import torch

    from ftexp.errors import TrainingDiverged
    from ftexp.training.divergence import FiniteLoss

    trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=accumulate, log_every_n_steps=1000,
                              gradient_clip_val=0.0, precision="bf16-mixed")
    guard = FiniteLoss("finetune", lr=0.1)
    for i, loss in enumerate([1.0, 2.0, float("nan"), 3.0]):
        trainer.global_step = i // accumulate  # before the batch
        guard.on_train_batch_start(trainer, None, None, i)
        trainer.global_step = (i + 1) // accumulate  # a step is taken after every accumulate-th batch
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, i)
    with pytest.raises(TrainingDiverged) as err:
        guard.on_train_epoch_end(trainer, None)
    assert where in str(err.value) and last in str(err.value) and "(it is 0.1)" in str(err.value)
    assert "gradient clipping (trainer.gradient_clip_val=1.0) or trainer.precision=32-true (it is bf16-mixed)" \
        in str(err.value)


@pytest.mark.parametrize("keep", [True, False])
def test_a_failed_run_keeps_its_checkpoints_and_checkpoints_false_writes_none(tiny_overrides, monkeypatch, keep):
    """An exception after training (here: in the evaluation of the trained model) keeps the epoch
    checkpoints for resume=true; trainer.checkpoints=false never writes any."""
    from ftexp.eval.row import RowEvaluator

    real, calls = RowEvaluator.evaluate, []

    def failing_second_row(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("evaluation broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(RowEvaluator, "evaluate", failing_second_row)
    overrides = [*tiny_overrides, "trainer.max_epochs=2", f"trainer.checkpoints={str(keep).lower()}"]
    with pytest.raises(RuntimeError, match="evaluation broke"):
        compose_and_run(overrides)
    out = Path(compose_config(overrides).output_dir)
    assert json.loads((out / "results.json").read_text())["status"] == "failed"
    saved = sorted(p.relative_to(out).as_posix() for p in out.glob("checkpoints/**/*") if p.is_file())
    assert saved == (["checkpoints/config.json", "checkpoints/stage1/last.ckpt"] if keep else [])  # (what resumes)


def test_a_resumed_job_continues_its_own_wandb_run(tiny_overrides, monkeypatch):
    from ftexp.eval.row import RowEvaluator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    real, calls = RowEvaluator.evaluate, []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first job dies after training; the resumed one goes through
            raise RuntimeError("evaluation broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(RowEvaluator, "evaluate", failing_once)
    overrides = [*tiny_overrides, "logger=wandb"]
    with pytest.raises(RuntimeError):
        compose_and_run(overrides)
    cfg, _ = compose_and_run([*overrides, "resume=true"])
    out = Path(cfg.output_dir)
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({r.name.rsplit("-", 1)[-1] for r in runs}) == 1, runs  # one run id
    assert json.loads((out / "results.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("resume", [True, False])
def test_a_resumed_job_keeps_the_csv_rows_it_logged_before(tmp_path, resume):
    """Lightning's CSV writer deletes an existing metrics.csv: right for overwrite=true, not for resume."""
    import csv

    from ftexp.tracking.loggers import CSVLogger, RunIdentity

    first = CSVLogger(None)
    first.start(tmp_path, {"resume": False}, RunIdentity(name="run"))
    first.lightning.log_metrics({"train/loss": 2.0}, step=1)
    first.finish(failed=True)
    again = CSVLogger(None)
    again.start(tmp_path, {"resume": resume}, RunIdentity(name="run"))
    again.lightning.log_metrics({"train/loss": 1.0, "val/loss": 1.5}, step=2)
    again.finish(failed=False)
    with open(tmp_path / "csv" / "metrics.csv", newline="") as file:
        rows = [(r["step"], r["train/loss"], r["val/loss"]) for r in csv.DictReader(file)]
    assert rows == ([("1", "2.0", ""), ("2", "1.0", "1.5")] if resume else [("2", "1.0", "1.5")])


def test_resume_tells_a_changed_setting_from_where_things_are_read_and_shown():
    from ftexp.training.checkpoints import config_changes

    before = {"seed": 0, "optim": {"lr": 1e-3, "betas": [0.9, 0.95]}, "data_dir": "/a", "logger": {"project": "x"},
              "trainer": {"devices": 1, "max_epochs": 3}, "resume": False}
    moved = {**before, "data_dir": "/b", "logger": {"project": "y"}, "resume": True,
             "trainer": {"devices": 2, "max_epochs": 3}}
    assert config_changes(before, moved) == []  # read elsewhere, shown elsewhere, on more devices
    changed = {**moved, "seed": 5, "optim": {"lr": 1e-3, "betas": (0.9, 0.99)}, "trainer": {"devices": 2}}
    assert config_changes(before, changed) == ["optim.betas: [0.9, 0.95] -> [0.9, 0.99]", "seed: 0 -> 5",
                                               "trainer.max_epochs: 3 -> '<unset>'"]
