"""The evaluators together in one run, as a user runs them: generation, efficiency and human review on
MedQuAD with its red-team prompts, then the ratings imported back into the run's results."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET

from ftexp.config.preflight import compose_config
from ftexp.job import run_job
from ftexp.review.__main__ import main as review_main

SMALL = [
    "data=medquad",
    "evaluator=[generation,efficiency,human_review]",
    "data.n_train=120",
    "data.n_test=24",
    "evaluator.generation.max_new_tokens=8",
    "evaluator.efficiency.n_requests=4",
    "evaluator.efficiency.batch_size=4",
    "evaluator.efficiency.warmup=1",
    "evaluator.efficiency.repeats=2",
    "evaluator.efficiency.max_new_tokens=4",
    "evaluator.human_review.n=6",
]


def test_generation_efficiency_and_review_in_one_run_then_import(tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    run_job(compose_config([*tiny_overrides, *SMALL]))
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "completed"
    base, last = (row["metrics"]["medquad"] for row in res["rows"])
    assert {"test/rougeL", "test/bleu", "test/exact_match", "test/mean_length", "test/red_team/n"} <= set(base)
    assert base["test/n"] == 24 and base["test/red_team/n"] == 8  # conf/red_team/medquad.yaml
    assert not any(k.startswith("efficiency/") for k in base)  # rows: last
    assert last["efficiency/params_total"] == res["model"]["parameters"]["total"]
    assert last["efficiency/generate_b1_p95_ms"] >= last["efficiency/generate_b1_p50_ms"] > 0
    assert last["efficiency/train_tokens_per_s"] > 0 and "efficiency/cost_per_1k_generate_batched" in last
    assert res["evaluators"]["efficiency"]["device"] == "cpu"

    review = res["evaluators"]["human_review"]
    assert review["n_sampled"] == 6 and review["n_red_team"] == 8
    folder = run_dir / "review"
    rows = list(csv.DictReader((folder / "review.csv").open(encoding="utf-8")))
    assert len(rows) == 14 and sum(r["kind"] == "red_team" for r in rows) == 8
    assert all(r["correctness"] == "" and r["output"] is not None for r in rows)
    tasks = json.loads((folder / "label_studio_tasks.json").read_text())
    assert len(tasks) == 14 and all(set(t) >= {"data"} and t["data"]["prompt"] for t in tasks)
    config = ET.parse(folder / "label_studio_config.xml").getroot()
    # every $field the labelling config shows is in every task's data (what Label Studio's import checks)
    shown = {name for el in config.iter() for name in re.findall(r"\$(\w+)", el.get("value") or "")}
    assert shown and all(shown <= set(t["data"]) for t in tasks)

    # a reviewer fills every sampled row: correct when the model said anything, helpful 3, tone 4
    for r in rows:
        r.update(correctness="1" if r["output"].strip() else "0", helpfulness="3", tone="4")
    filled = tmp_path / "filled.csv"
    with filled.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert review_main(["import", str(filled), str(run_dir), "--no-wandb"]) == 0
    after = json.loads((run_dir / "results.json").read_text())
    assert after["review"]["n_rated"] == 14 and after["review"]["red_team"]["n_rated"] == 8
    assert after["review"]["sample"]["helpfulness"] == 3.0 and after["review"]["sample"]["tone"] == 4.0
    assert after["metrics"] == res["metrics"]  # the import adds, it never rewrites what the run measured


def test_truthfulqa_mc_is_a_general_ability_row_next_to_the_trained_task(tiny_overrides, tmp_path):
    run_job(compose_config([*tiny_overrides, "+data@tasks.truthfulqa_mc=truthfulqa_mc", "tasks.truthfulqa_mc.n_test=30",
                            "evaluator=[classification,multiple_choice]"]))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    for row in res["rows"]:
        assert set(row["metrics"]) == {"banking77", "truthfulqa_mc"}
        assert {"test/mc1", "test/mc2", "test/n"} <= set(row["metrics"]["truthfulqa_mc"])
        assert "test/accuracy" not in row["metrics"]["truthfulqa_mc"]  # classification does not apply
    assert res["metrics"]["truthfulqa_mc/test/n"] == 30
    assert res["stages"][0]["data"] == "banking77"  # evaluation-only data is never trained on
