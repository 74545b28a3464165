"""debug=quick: every part of a config on a few batches and examples; never mixed with a full run."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from ftexp.config.trainer_schema import batch_limit_valid
from ftexp.data.base import Example, Task
from ftexp.eval.row import RowEvaluator, first_examples
from ftexp.training.trainer import build_trainer


def _examples(n, split):
    return [Example(prompt=f"{split} {i}", completion=str(i)) for i in range(n)]


def test_batch_limits_are_a_count_a_share_or_null():
    assert all(batch_limit_valid(v) for v in (None, 1, 4, 0.25, 1.0))
    assert not any(batch_limit_valid(v) for v in (0, -1, 0.0, 1.5, True, "4"))


@pytest.mark.parametrize("override", ["trainer.limit_train_batches=0", "trainer.limit_val_batches=1.5",
                                      "limit_eval_examples=0"])
def test_a_bad_limit_is_refused_with_its_key(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        check_overrides([override])


def test_debug_quick_sets_the_limits_and_a_run_without_it_has_none():
    quick = compose_config(["debug=quick", "experiment=forgetting", "mitigation=ewc"])
    assert (quick.trainer.limit_train_batches, quick.trainer.limit_val_batches, quick.limit_eval_examples) == (4, 2, 16)
    full = compose_config(["experiment=forgetting"])
    assert (full.trainer.limit_train_batches, full.trainer.limit_val_batches, full.limit_eval_examples) == (None,) * 3


def test_the_trainer_gets_the_batch_limits(tmp_path):
    cfg = compose_config(["trainer.limit_train_batches=3", "trainer.limit_val_batches=0.5"]).trainer
    stage = OmegaConf.create({"max_epochs": None, "max_steps": None})
    trainer = build_trainer(cfg, stage, tmp_path, logger=None)
    assert (trainer.limit_train_batches, trainer.limit_val_batches) == (3, 0.5)
    unlimited = build_trainer(compose_config([]).trainer, stage, tmp_path, logger=None)
    assert (unlimited.limit_train_batches, unlimited.limit_val_batches) == (1.0, 1.0)


def test_evaluators_see_the_first_examples_of_every_split_but_train():
    task = Task(name="t", splits={s: _examples(10, s) for s in ("train", "val", "test")},
                slices={"short": [1, 3, 8]}, red_team=_examples(5, "red"))
    capped = first_examples(task, 4)
    assert [len(capped.splits[s]) for s in ("train", "val", "test")] == [10, 4, 4]
    assert capped.slices == {"short": [1, 3]} and len(capped.red_team) == 4
    assert len(task.splits["test"]) == 10 and task.slices["short"] == [1, 3, 8]  # training keeps the whole task


def test_the_row_evaluator_caps_every_task_only_when_asked():
    tasks = {n: Task(name=n, splits={"train": _examples(9, "train"), "test": _examples(9, "test")})
             for n in ("a", "b")}
    rows = RowEvaluator(tasks, [], torch.device("cpu"), "32-true", limit=2)
    assert [len(t.splits["test"]) for t in rows.tasks.values()] == [2, 2]
    assert RowEvaluator(tasks, [], torch.device("cpu"), "32-true").tasks is tasks


def test_the_row_cache_key_tells_a_capped_task_from_the_whole():
    from ftexp.eval.row_cache import task_identity

    task = Task(name="t", splits={"train": _examples(9, "train"), "test": _examples(9, "test")})
    assert task_identity(first_examples(task, 4), "test") != task_identity(task, "test")
    assert task_identity(first_examples(task, 9), "test") == task_identity(task, "test")
