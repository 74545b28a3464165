"""Damaged files in the cache folder are rebuilt: a cut-short cache entry gives a warning naming it
and the numbers of a run with a healthy cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ftexp.config.preflight import compose_config
from ftexp.job import run_job
from tests.test_reliability import TIMING

TWO_STAGES = ["experiment=forgetting", "data.n_train=154", "data.n_test=40", "tasks.cuad.n_train=152",
              "tasks.cuad.n_test=40", "tasks.general.n_train=20", "tasks.general.n_test=5", "mitigation=none"]
SYNTHETIC = ["data.synthetic.share=0.2", "data.synthetic.method=model", "data.synthetic.generator_epochs=1",
             "data.synthetic.max_new_tokens=8"]

# Rows are cached only where the case is about them: elsewhere a row hit could hide a changed model.
NO_ROWS = "cache_rows=false"
# case -> (overrides, files to cut short, files to delete, whether an entry is the file's folder)
CASES = {
    "tokenizer": ([NO_ROWS], "tokenizers/*/tokenizer.json", None, True),
    "stage-weights": ([NO_ROWS, *TWO_STAGES], "stages/*/state.pt", None, True),
    "stage-summary": ([NO_ROWS, *TWO_STAGES], "stages/*/summary.json", None, True),
    "rows": ([], "rows/*/row.json", None, True),
    # the pool of generated texts goes too, or the rebuilt generator would not be needed
    "generator": ([NO_ROWS, *SYNTHETIC], "generators/*/generator.pt", "synthetic/*.jsonl", False),
    "synthetic-texts": ([NO_ROWS, *SYNTHETIC], "synthetic/*.jsonl", None, False),
}


def _job(overrides, name, tmp_path) -> dict:
    run_job(compose_config([*overrides, f"output_dir={tmp_path / name}"]))
    return json.loads((tmp_path / name / "results.json").read_text())


def _cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _numbers(results: dict) -> tuple:
    """What a run computed, less measured durations."""
    metrics = {k: v for k, v in results["metrics"].items() if not any(t in k for t in TIMING)}
    rows = [{**row, "metrics": {k: v for k, v in row["metrics"].items() if not any(t in k for t in TIMING)}}
            for row in results["rows"]]
    return metrics, rows, [s["train/loss"] for s in results["stages"]]


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_cache_entry_is_rebuilt_and_the_run_gives_the_same_numbers(case, tiny_overrides, tmp_path,
                                                                             caplog):
    extra, damaged, deleted, in_folder = CASES[case]
    cache = tmp_path / "cache"
    overrides = [*tiny_overrides, *extra, f"cache_dir={cache}", "save_model=false"]
    healthy = _job(overrides, "healthy", tmp_path)
    files = sorted(cache.glob(damaged))
    assert files, f"the first run left no {damaged}"
    for f in files:
        _cut_short(f)
    for f in cache.glob(deleted) if deleted else ():
        f.unlink()

    with caplog.at_level(logging.WARNING):
        again = _job(overrides, "again", tmp_path)
    assert again["status"] == "completed"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for f in files:
        entry = f.parent if in_folder else f
        assert any(str(entry) in w for w in warnings), (entry, warnings)
    assert _numbers(again) == _numbers(healthy)
