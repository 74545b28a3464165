"""debug=quick on a multi-stage experiment: every stage, row and evaluator on a few batches (slow tier)."""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import ftexp

pytestmark = pytest.mark.slow


def test_quick_forgetting_runs_both_stages_every_row_and_the_fisher_on_a_few_batches(data_dir, cache_dir, tmp_path):
    proc = ftexp("debug=quick", "experiment=forgetting", "mitigation=ewc", f"data_dir={data_dir}",
                 f"cache_dir={cache_dir}", f"hydra.run.dir={tmp_path}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "completed"
    assert [s["name"] for s in res["stages"]] == ["banking77", "cuad"]
    assert all(s["steps"] <= 4 for s in res["stages"])  # trainer.limit_train_batches=4, one epoch
    assert len(res["rows"]) == 3
    for row in res["rows"]:
        assert row["metrics"]["banking77"]["test/n"] == row["metrics"]["cuad"]["test/n"] == 16  # limit_eval_examples
        assert "test/loss" in row["metrics"]["general"]  # the perplexity evaluator ran on its capped split
    assert "EWC after stage 1" in proc.stdout + proc.stderr  # the Fisher was taken
