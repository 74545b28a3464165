"""The row cache: jobs that score the same weights on the same data share the scores, and a row never
changes the run's random streams, cached or not."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ftexp.config.preflight import compose_config
from ftexp.data.base import Example, Task
from ftexp.eval.base import EvalContext, Evaluator, Output
from ftexp.eval.row_cache import RowCache
from ftexp.job import run_job
from tests.helpers.models import tiny_lm


class Counting(Evaluator):
    """Scores a model by the sum of its weights; counts its calls; draws from torch's generator."""

    def __init__(self, cacheable: bool = True) -> None:
        super().__init__(SimpleNamespace(split="test", knob=1))
        self.calls, self.cacheable, self.name = 0, cacheable, "counting"

    def evaluate(self, model, task, ctx):
        self.calls += 1
        torch.rand(3)  # an evaluator that consumes randomness must not shift the run's stream
        ctx.outputs.setdefault(task.name, []).append(Output(id=f"{task.name}/test/0", task=task.name, prompt="p",
                                                            output="o", reference="r", scores={"x": 1.0}))
        return {"test/score": float(sum(p.sum() for p in model.parameters()))}


class Tok:
    bos_token_id, eos_token_id, pad_token_id, chat_template = 1, 2, 0, None

    def get_vocab(self):
        return {"a": 3, "b": 4}


def task(prompt: str = "p") -> Task:
    t = Task(name="toy")
    t.splits = {"test": [Example(prompt=prompt, completion="c", label="c")], "train": []}
    return t


def test_same_weights_same_data_are_scored_once(tmp_path):
    cache, model, evaluator = RowCache(tmp_path, Tok()), tiny_lm(), Counting()
    ctx = EvalContext(tokenizer=Tok(), max_length=32)
    first = cache.evaluate(evaluator, model, task(), ctx)
    ctx2 = EvalContext(tokenizer=Tok(), max_length=32, seed=5)  # another job (seed): greedy scores are shared
    again = RowCache(tmp_path, Tok()).evaluate(evaluator, model, task(), ctx2)
    assert again == first and evaluator.calls == 1
    assert ctx2.outputs["toy"] == ctx.outputs["toy"]  # the outputs for human review come back too
    other = tiny_lm(seed=1)  # other weights
    RowCache(tmp_path, Tok()).evaluate(evaluator, other, task(), EvalContext(tokenizer=Tok(), max_length=32))
    RowCache(tmp_path, Tok()).evaluate(evaluator, model, task("q"), EvalContext(tokenizer=Tok(), max_length=32))
    RowCache(tmp_path, Tok()).evaluate(evaluator, model, task(), EvalContext(tokenizer=Tok(), max_length=16))
    evaluator.cfg.knob = 2
    RowCache(tmp_path, Tok()).evaluate(evaluator, model, task(), EvalContext(tokenizer=Tok(), max_length=32))
    assert evaluator.calls == 5  # weights, examples, prompt length and settings each make a new key


def test_machine_measurements_always_run(tmp_path):
    evaluator = Counting(cacheable=False)
    for _ in range(2):
        RowCache(tmp_path, Tok()).evaluate(evaluator, tiny_lm(), task(), EvalContext(tokenizer=Tok(), max_length=32))
    assert evaluator.calls == 2


@pytest.mark.parametrize("cached", [False, True])
def test_evaluation_leaves_the_random_streams_as_they_were(tmp_path, cached):
    cache, model = RowCache(tmp_path if cached else None, Tok()), tiny_lm()
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    for _ in range(2):  # (the second is a cache hit when cached)
        cache.evaluate(Counting(), model, task(), EvalContext(tokenizer=Tok(), max_length=32))
    assert torch.equal(torch.rand(4), expected)


def test_a_damaged_entry_is_scored_again(tmp_path):
    evaluator, model = Counting(), tiny_lm()
    RowCache(tmp_path, Tok()).evaluate(evaluator, model, task(), EvalContext(tokenizer=Tok(), max_length=32))
    (entry,) = [p for p in (tmp_path / "rows").iterdir() if p.is_dir()]
    (entry / "row.json").write_text('{"metrics": {"test/sc')
    got = RowCache(tmp_path, Tok()).evaluate(evaluator, model, task(), EvalContext(tokenizer=Tok(), max_length=32))
    assert evaluator.calls == 2 and json.loads((entry / "row.json").read_text())["metrics"] == got


def test_jobs_of_a_sweep_share_row_0_and_train_as_without_the_cache(tiny_overrides, tmp_path):
    def job(name, *extra):
        # a cache of this test's own: the session's shared one may already hold this row 0 from another test
        cfg = compose_config([*tiny_overrides, f"output_dir={tmp_path / name}", f"cache_dir={tmp_path / 'cache'}",
                              "save_model=false", *extra])
        run_job(cfg)
        return json.loads((tmp_path / name / "results.json").read_text())

    a = job("a")
    b = job("b", "data.n_train=120")  # another training set: the untouched model's row is the same
    fresh = job("fresh", "data.n_train=120", "cache_rows=false")
    assert "row_cache" not in a and b["row_cache"]["reused"] == 1
    assert b["rows"][0] == a["rows"][0]
    assert b["rows"] == fresh["rows"] and b["stages"][0]["train/loss"] == fresh["stages"][0]["train/loss"]
