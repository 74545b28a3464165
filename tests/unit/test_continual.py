"""Iterative fine-tuning: the score matrix and its metrics, replay, and a multi-task staged run."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from ftexp.config.preflight import compose_config
from ftexp.data.base import Example, Task
from ftexp.data.datamodule import Batching, FineTuneDataModule, LengthGroupedBatches, RankShare
from ftexp.data.replay_batches import ReplayBatches, ReplayMix, ReplayRows
from ftexp.eval.continual import continual_metrics, score_matrix

# Three rows (base, after stage 1 on A, after stage 2 on B) over tasks A, B and a general loss G.
R = [[0.10, 0.05, 6.0],
     [0.80, 0.20, 5.0],
     [0.50, 0.70, 5.5]]
TASKS = ["A", "B", "G"]


def test_metrics_match_a_hand_computed_matrix_and_leave_it_alone():
    before = copy.deepcopy(R)
    m = continual_metrics(R, TASKS, {"A": 1, "B": 2}, {"A": True, "B": True, "G": False})
    assert m["acc"] == pytest.approx((0.50 + 0.70) / 2)
    assert m["bwt"] == pytest.approx(0.50 - 0.80)  # only A was trained before the last stage
    assert m["fwt"] == pytest.approx(0.20 - 0.05)  # B before its own stage vs the base model
    assert m["forgetting"] == {"A": pytest.approx(0.80 - 0.50)}
    assert m["retention"]["A"] == pytest.approx(0.50 / 0.80) and m["retention"]["B"] == pytest.approx(1.0)
    assert m["retention"]["G"] == pytest.approx(6.0 / 5.5)  # a loss: base / last, > 1 is better
    assert R == before


def test_score_matrix_reads_rows_and_marks_missing_scores():
    rows = [{"metrics": {"A": {"test/accuracy": 0.1}}}, {"metrics": {"A": {"test/accuracy": 0.9}, "B": {}}}]
    assert score_matrix(rows, ["A", "B"], {"A": "test/accuracy", "B": "test/accuracy"}) == [[0.1, None], [0.9, None]]


@pytest.mark.parametrize("mode", ["replace", "add"])
@pytest.mark.parametrize("ratio", [0.1, 0.25])
def test_replay_batches_realise_the_ratio_and_cover_every_new_row(mode, ratio):
    base = LengthGroupedBatches([10 + i % 7 for i in range(1000)], batch_size=32, seed=0)
    sampler = ReplayBatches(base, n_new=1000, n_replay=300, mix=ReplayMix(ratio, mode), batch_size=32, seed=1)
    batches = list(sampler)
    replayed = sum(i >= 1000 for b in batches for i in b)
    total = sum(len(b) for b in batches)
    assert abs(replayed / total - ratio) <= 0.01
    assert sorted(i for b in batches for i in b if i < 1000) == list(range(1000))  # each new row once
    assert len(batches) == len(sampler)
    if mode == "replace":
        assert max(len(b) for b in batches) == 32
    else:
        assert sorted(len(b) for b in batches)[1] >= 32  # one partial batch of new rows at most


def test_replay_buffer_reservoir_is_seeded_and_bounded():
    from types import SimpleNamespace

    from ftexp.mitigation.replay import Replay

    cfg = compose_config(["mitigation=replay", "mitigation.buffer_size=50"]).mitigation
    task = Task(name="A", splits={"train": [Example(prompt=f"p{i}", completion="x", label="x", source="A")
                                            for i in range(400)]})

    def buffered(seed):
        replay = Replay(cfg)
        ctx = SimpleNamespace(index=1, seed=seed, task=task, datamodule=None, encode=None, extras={})
        replay.before_stage(ctx)
        replay.after_stage(ctx)
        return [ex.prompt for ex in replay.buffer()]

    a = buffered(0)
    assert len(a) == 50 and a == buffered(0) and a != buffered(1)
    assert len(set(a)) == 50


def test_two_stage_run_fills_the_matrix_and_replays(tiny_overrides):
    from ftexp.job import run_job

    small = ["data.n_train=154", "data.n_test=77", "tasks.cuad.n_train=152", "tasks.cuad.n_test=76",
             "tasks.general.n_train=20", "tasks.general.n_test=5", "trainer.log_every_n_steps=1",
             "mitigation=replay", "mitigation.ratio=0.25", "logger=csv", "save_model=false"]
    cfg = compose_config([*tiny_overrides, "experiment=forgetting", *small])
    run_job(cfg)
    out = Path(cfg.output_dir)
    res = json.loads((out / "results.json").read_text())
    cl = res["continual"]
    assert cl["tasks"] == ["banking77", "cuad", "general"] and cl["rows"] == ["base", "banking77", "cuad"]
    assert len(cl["R"]) == 3 and all(len(row) == 3 for row in cl["R"])
    assert cl["first_trained"] == {"banking77": 1, "cuad": 2} and cl["score"]["general"] == "test/loss"
    assert {"cl/acc", "cl/bwt", "cl/forgetting/banking77", "cl/retention/general"} <= set(res["metrics"])
    assert (out / "continual.png").stat().st_size > 10_000
    assert set(res["tasks"]) == {"cuad", "general"}  # data counts of the other tasks
    with (out / "csv" / "metrics.csv").open() as f:
        header, *lines = [line.rstrip("\n").split(",") for line in f]
    col = header.index("mitigation/replay_ratio")
    ratios = [float(line[col]) for line in lines if len(line) > col and line[col]]
    assert ratios and math.isclose(ratios[-1], 0.25, abs_tol=0.03)  # realised over stage 2


@pytest.mark.parametrize("mitigation, logged", [("ewc", "mitigation/ewc_penalty"), ("lwf", "mitigation/lwf_kd")])
def test_ewc_and_lwf_run_through_two_stages(tiny_overrides, mitigation, logged):
    from ftexp.job import run_job

    small = ["data.n_train=154", "data.n_test=20", "tasks.cuad.n_train=152", "tasks.cuad.n_test=20",
             "tasks.general.n_train=20", "tasks.general.n_test=5", "trainer.log_every_n_steps=1",
             f"mitigation={mitigation}", "logger=csv", "save_model=false"]
    if mitigation == "ewc":
        small += ["mitigation.fisher_samples=32", "mitigation.fisher_batch_size=8"]
    cfg = compose_config([*tiny_overrides, "experiment=forgetting", *small])
    run_job(cfg)
    out = Path(cfg.output_dir)
    assert json.loads((out / "results.json").read_text())["status"] == "completed"
    with (out / "csv" / "metrics.csv").open() as f:
        header, *lines = [line.rstrip("\n").split(",") for line in f]
    col = header.index(logged)
    values = [float(line[col]) for line in lines if len(line) > col and line[col]]
    assert values and max(values) > 0  # the penalty / distillation term acted in stage 2


def test_replay_installed_on_a_datamodule_draws_the_replay_batches_and_marks_them():
    """The DataModule knows no replay: the rows, batches and ``is_replay`` marks come from the plan."""
    train = [{"input_ids": [1] * (3 + i % 5), "labels": [1] * (3 + i % 5), "n": i} for i in range(40)]
    replay = [{"input_ids": [2] * 4, "labels": [2] * 4, "n": 100 + j} for j in range(9)]
    dm = FineTuneDataModule(train, [], Batching(pad_id=0, batch_size=8, seed=3))
    plain_rows, plain = dm.identity()
    assert set(plain_rows) == {"train", "val"} and "replay_ratio" not in plain and "num_workers" not in plain
    dm.install(ReplayRows(replay, ReplayMix(0.25, "replace")))
    rows, settings = dm.identity()
    assert rows["replay"] == replay and settings == {**plain, "replay_ratio": 0.25, "replay_mode": "replace"}
    expected = ReplayBatches(LengthGroupedBatches([len(r["input_ids"]) for r in train], 8, seed=3), n_new=40,
                             n_replay=9, mix=ReplayMix(0.25, "replace"), batch_size=8, seed=3 + 7919)
    for want, batch in zip(expected, dm.train_dataloader(), strict=True):
        assert batch["is_replay"].tolist() == [i >= 40 for i in want]
        assert batch["input_ids"].shape[0] == len(want)


def test_replay_batches_under_ddp_are_the_global_batches_split():
    lengths = [10 + i % 7 for i in range(1001)]

    def mixed():
        return ReplayBatches(LengthGroupedBatches(lengths, batch_size=32, seed=0), n_new=1001, n_replay=50,
                             mix=ReplayMix(0.1, "replace"), batch_size=32, seed=5)

    single = list(mixed())
    assert len(single) == len(mixed())
    shards = [list(RankShare(mixed(), rank, 3)) for rank in range(3)]
    assert [len(s) for s in shards] == [len(single)] * 3
    assert all(sorted(i for s in shards for i in s[step]) == sorted(batch) for step, batch in enumerate(single))


def test_balanced_replay_keeps_an_equal_share_of_every_label():
    from types import SimpleNamespace

    from ftexp.mitigation.replay import Replay

    cfg = compose_config(["mitigation=replay", "mitigation.buffer_size=30", "mitigation.sampling=balanced"]).mitigation
    sizes = {"big": 300, "mid": 60, "small": 12}
    train = [Example(prompt=f"{lb}{i}", completion=lb, label=lb, source="A") for lb, n in sizes.items() for i in range(n)]
    replay = Replay(cfg)
    ctx = SimpleNamespace(index=1, seed=0, task=Task(name="A", splits={"train": train}), extras={})
    replay.before_stage(ctx)
    replay.after_stage(ctx)
    counts = {lb: sum(ex.label == lb for ex in replay.buffer()) for lb in sizes}
    assert counts == {"big": 10, "mid": 10, "small": 10}  # a reservoir would give about 24 / 5 / 1
    assert all(ex.origin == "replay" for ex in replay.buffer())
