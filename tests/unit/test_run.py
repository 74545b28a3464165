"""A whole run in-process: rows, results.json, saved weights, and failures recorded as failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftexp.config.preflight import compose_config
from ftexp.job import run_job


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_one_run_end_to_end(tiny_overrides, tmp_path):
    cfg = compose_config([*tiny_overrides, "logger=csv"])
    value = run_job(cfg)
    run_dir = tmp_path / "run"
    res = results(run_dir)
    assert res["status"] == "completed"
    assert value == res["metrics"]["val/loss"]  # the sweepers' objective
    assert {"test/accuracy", "test/macro_f1", "train/loss", "val/loss", "train/tokens_per_s"} <= set(res["metrics"])
    assert 0.0 <= res["metrics"]["test/accuracy"] <= 1.0
    assert [r["index"] for r in res["rows"]] == [0, 1] and res["rows"][0]["stage"] == "base"
    assert res["rows"][1]["metrics"]["banking77"]["test/accuracy"] == res["metrics"]["test/accuracy"]
    assert res["stages"][0]["steps"] == 8 and res["stages"][0]["effective_tokens"] > 0  # 240 / 32 per epoch
    train_counts = res["data"]["counts"]["train"]
    assert train_counts["total"] == 240 and train_counts["by_origin"] == {"real": 240}
    assert len(train_counts["by_label"]) == 77 and sum(train_counts["by_label"].values()) == 240
    assert res["data"]["counts"]["test"]["total"] == 80
    assert res["config"]["model"]["hidden_size"] == 32 and res["config"]["output_dir"] == str(run_dir)
    assert res["environment"]["versions"]["torch"] and "commit" in res["environment"]["git"]
    assert res["model"]["parameters"]["trainable"] == res["model"]["parameters"]["total"]
    assert res["model"]["trust_remote_code"] is False
    assert {"setup", "eval/0", "stage/1", "eval/1", "total"} <= set(res["wall_time_s"])
    assert (run_dir / "model" / "config.json").is_file() and (run_dir / "model" / "tokenizer.json").is_file()
    metrics_csv = (run_dir / "csv" / "metrics.csv").read_text()
    assert "train/loss" in metrics_csv and "eval/banking77/test/accuracy" in metrics_csv and "lr" in metrics_csv


def test_training_improves_over_the_untouched_model(tiny_overrides, toy_data):
    cfg = compose_config([*tiny_overrides, f"data.path={toy_data}", "data.n_train=null", "data.n_test=null",
                          "trainer.max_epochs=20", "model.batch_size=4", "model.lr=1e-2", "save_model=false"])
    run_job(cfg)
    rows = results(Path(cfg.output_dir))["rows"]
    before, after = (rows[k]["metrics"]["banking77"]["test/accuracy"] for k in (0, 1))
    assert after == 1.0 > before  # three labels, each with its own words


def test_lora_run_saves_an_adapter(tiny_overrides):
    cfg = compose_config([*tiny_overrides, "peft=lora", "peft.r=4"])
    run_job(cfg)
    res = results(Path(cfg.output_dir))
    assert res["status"] == "completed"
    assert res["model"]["parameters"]["trainable"] < res["model"]["parameters"]["total"] / 2
    assert (Path(cfg.output_dir) / "adapter" / "adapter_config.json").is_file()


def test_a_failing_run_records_failed_and_exits_nonzero(tiny_overrides, tmp_path):
    cfg = compose_config([*tiny_overrides, f"data_dir={tmp_path / 'missing'}"])
    with pytest.raises(SystemExit) as info:
        run_job(cfg)
    assert info.value.code == 1
    res = results(Path(cfg.output_dir))
    assert res["status"] == "failed"
    assert res["error"]["type"] == "DataError" and "FTEXP_DATA_DIR" in res["error"]["message"]
    assert "metrics" in res and res["rows"] == []


def test_an_unexpected_exception_is_recorded_and_reraised(tiny_overrides, monkeypatch):
    import ftexp.job

    def boom(*args, **kwargs):
        raise RuntimeError("boom in training")

    monkeypatch.setattr(ftexp.job, "run", boom)
    cfg = compose_config(tiny_overrides)
    with pytest.raises(RuntimeError, match="boom"):
        run_job(cfg)
    res = results(Path(cfg.output_dir))
    assert res["status"] == "failed" and res["error"]["message"] == "boom in training"


def test_training_on_an_evaluation_only_dataset_is_refused(tiny_overrides):
    cfg = compose_config([*tiny_overrides, "data.eval_only=true"])
    with pytest.raises(SystemExit):
        run_job(cfg)
    res = results(Path(cfg.output_dir))
    assert res["status"] == "failed" and "evaluation only" in res["error"]["message"]
    assert res["rows"] == []  # refused before any evaluation or training


def test_two_stages_fill_rows_call_hooks_and_continue_the_step_axis(tiny_overrides, monkeypatch):
    import csv

    from ftexp.mitigation.base import NoMitigation

    calls = []
    monkeypatch.setattr(NoMitigation, "before_stage", lambda self, ctx: calls.append(("before", ctx.index, ctx.name)))
    monkeypatch.setattr(NoMitigation, "after_stage", lambda self, ctx: calls.append(("after", ctx.index, ctx.name)))
    cfg = compose_config([*tiny_overrides, "logger=csv", "save_model=false",
                          "stages=[{name: first}, {name: second, max_epochs: 2, lr: 1e-3}]"])
    run_job(cfg)
    res = results(Path(cfg.output_dir))
    assert [(r["index"], r["stage"]) for r in res["rows"]] == [(0, "base"), (1, "first"), (2, "second")]
    assert calls == [("before", 1, "first"), ("after", 1, "first"), ("before", 2, "second"), ("after", 2, "second")]
    first, second = res["stages"]
    assert (first["steps"], second["steps"], second["epochs"], second["lr"]) == (8, 16, 2, 1e-3)
    with (Path(cfg.output_dir) / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    loss_steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert max(loss_steps) >= 8 + 16 - 2 and loss_steps == sorted(loss_steps)  # stage 2 continues stage 1
    eval_steps = [int(r["step"]) for r in rows if r.get("eval/banking77/test/accuracy")]
    assert eval_steps == [0, 8, 24]


def test_resume_skips_a_job_whose_results_say_completed_and_reruns_a_failed_one(tiny_overrides, tmp_path):
    cfg = compose_config([*tiny_overrides, "resume=true"])
    first = run_job(cfg)
    path = tmp_path / "run" / "results.json"
    stamp = path.stat().st_mtime_ns
    assert run_job(cfg) == first and path.stat().st_mtime_ns == stamp  # skipped: nothing re-ran or rewrote
    res = results(tmp_path / "run")
    res["status"] = "failed"
    path.write_text(json.dumps(res))
    run_job(cfg)  # a failed job is run again
    assert results(tmp_path / "run")["status"] == "completed"


def test_no_stages_scores_the_untouched_model_only(tiny_overrides):
    cfg = compose_config([*tiny_overrides, "stages=[]", "save_model=false"])
    run_job(cfg)
    res = results(Path(cfg.output_dir))
    assert res["status"] == "completed" and res["stages"] == []
    assert [r["index"] for r in res["rows"]] == [0]
    assert res["metrics"]["test/accuracy"] == res["rows"][0]["metrics"]["banking77"]["test/accuracy"]
