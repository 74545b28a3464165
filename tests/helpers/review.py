"""A human-review export of known outputs and its ratings, filled in as a reviewer would (CSV, JSONL,
Label Studio): the review and bad-input tests build on them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ftexp.config.eval_schema import HumanReviewConfig
from ftexp.eval.base import EvalContext, Output
from ftexp.review.export import HumanReview
from ftexp.tracking.results import RESULTS_FILE


def export(run_dir: Path, by_task, tracker=None, **cfg):
    """Run the evaluator's finish() and write the results.json a finished run would have."""
    ev = HumanReview(HumanReviewConfig(**cfg))
    info = ev.finish(EvalContext(tokenizer=None, max_length=16, outputs=by_task), run_dir, tracker)
    results = {"status": "completed", "run_dir": str(run_dir), "metrics": {"qa/test/rougeL": 0.4},
               "evaluators": {"human_review": info},
               "config": {"evaluator": {"human_review": {"folder": ev.cfg.folder}}}}
    (run_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    return info


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def read_csv(path: Path):
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -------------------------------------------------------------------------- the hand-computed fixture
#
# Eight rated sample rows of task "qa" (ids qa/test/0..7), two unrated sample rows, two red-team rows.
#
#   row          0    1    2    3    4    5    6    7
#   auto_correct 1    1    1    1    1    0    0    0
#   human corr.  1    1    1    0    0    0    0    0
#   helpfulness  5    4    4    2    3    1    2    1
#   tone         4    4    5    3    3    2    4    5
#   rougeL       .9   .8   .8   .5   .4   .2   .1   .1
#   bleu         30   20   25   5    -    -    -    -     (rows 4-7 have no BLEU)
#   exact_match  0    0    0    0    0    0    0    0     (constant: its correlations are undefined)
#
# Cohen's kappa: agreement on 6 of 8 -> p_o = 0.75; auto passes 5/8, humans 3/8 ->
#   p_e = 5/8*3/8 + 3/8*5/8 = 30/64; kappa = (0.75 - 30/64) / (1 - 30/64) = 18/34 = 9/17.
# Auto pass but human fail: rows 3, 4 of the 5 passes -> 2/5; auto fail but human pass: 0/3.
# Spearman (average ranks for ties), rougeL ranks [8, 6.5, 6.5, 5, 4, 3, 1.5, 1.5]:
#   helpfulness ranks [8, 6.5, 6.5, 3.5, 5, 1.5, 3.5, 1.5]; centred products sum to 36,
#   squares 41 and 40.5 -> rho = 36 / sqrt(41 * 40.5)
#   correctness ranks [7, 7, 7, 3, 3, 3, 3, 3] -> 30 / sqrt(41 * 30) = sqrt(30 / 41)
# bleu on rows 0-3: ranks [4, 2, 3, 1]; helpfulness [4, 2.5, 2.5, 1] -> 4.5 / sqrt(5 * 4.5) = sqrt(0.9);
#   correctness [3, 3, 3, 1] -> 3 / sqrt(5 * 3) = sqrt(0.6)
# The red-team rows (one of them a test example with auto_correct = 1 rated 0) stay out of all of
# the above: correctness [1, 0] -> 0.5, helpfulness [2, 1] -> 1.5, tone [5, 1] -> 3.

AUTO = [1, 1, 1, 1, 1, 0, 0, 0]
HUMAN = [(1, 5, 4), (1, 4, 4), (1, 4, 5), (0, 2, 3), (0, 3, 3), (0, 1, 2), (0, 2, 4), (0, 1, 5)]
ROUGE = [0.9, 0.8, 0.8, 0.5, 0.4, 0.2, 0.1, 0.1]
BLEU = [30.0, 20.0, 25.0, 5.0]
RED = {"qa/test/10": (0, 2, 5), "qa/red_team/1": (1, 1, 1)}  # (correctness, helpfulness, tone)
RED_EXPECTED = {"n_exported": 2, "n_rated": 2, "correctness": 0.5, "helpfulness": 1.5, "tone": 3.0}


def fixture_outputs():
    outs = []
    for i in range(8):
        scores = {"rougeL": ROUGE[i], "exact_match": 0.0, **({"bleu": BLEU[i]} if i < 4 else {})}
        outs.append(Output(id=f"qa/test/{i}", task="qa", prompt=f"q{i}", output=f"a{i}", reference=f"r{i}",
                           scores=scores, auto_correct=bool(AUTO[i])))
    for i in (8, 9):  # left unrated: they would change every statistic if counted
        outs.append(Output(id=f"qa/test/{i}", task="qa", prompt=f"q{i}", output=f"a{i}", reference=f"r{i}",
                           scores={"rougeL": 1.0, "exact_match": 1.0}, auto_correct=False))
    outs.append(Output(id="qa/test/10", task="qa", prompt="jailbreak", output="sure, here is how", reference="no",
                       scores={"rougeL": 0.9, "exact_match": 0.0}, auto_correct=True, red_team=True))
    outs.append(Output(id="qa/red_team/1", task="qa", prompt="attack", output="I can't help with that", red_team=True))
    return outs


def fixture_ratings():
    ratings = {f"qa/test/{i}": h for i, h in enumerate(HUMAN)}
    ratings.update(RED)
    return ratings

def filled(run_dir: Path, fmt: str, ratings=None, dest: Path = None) -> Path:
    """The export filled in as a reviewer would: ``csv``/``jsonl`` edited in place (copies), or a
    Label Studio JSON export (one annotation per rated task, the result items Label Studio writes)."""
    ratings = fixture_ratings() if ratings is None else ratings
    folder = run_dir / "review"
    dest = dest or run_dir.parent / f"ratings.{'json' if fmt == 'label_studio' else fmt}"
    if fmt == "csv":
        rows = read_csv(folder / "review.csv")
        for r in rows:
            if r["id"] in ratings:
                r["correctness"], r["helpfulness"], r["tone"] = map(str, ratings[r["id"]])
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\r\n")
        w.writeheader()
        w.writerows(rows)
        dest.write_text(buf.getvalue(), encoding="utf-8", newline="")
    elif fmt == "jsonl":
        rows = read_jsonl(folder / "review.jsonl")
        for r in rows:
            if r["id"] in ratings:
                r["correctness"], r["helpfulness"], r["tone"] = ratings[r["id"]]
                r["notes"] = "looked at it"
        dest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        tasks = json.loads((folder / "label_studio_tasks.json").read_text())
        for k, t in enumerate(tasks):
            t["id"] = 100 + k
            rid = t["data"]["review_id"]
            t["annotations"] = [] if rid not in ratings else [{"id": k, "was_cancelled": False, "result": ls_result(
                *ratings[rid])}]
        dest.write_text(json.dumps(tasks, indent=1))
    return dest


def ls_result(correctness, helpfulness, tone, notes=None):
    def item(name, kind, value):
        return {"from_name": name, "to_name": "output", "type": kind, "value": value}

    items = [item("correctness", "choices", {"choices": [str(correctness)]}),
             item("helpfulness", "rating", {"rating": helpfulness}), item("tone", "rating", {"rating": tone})]
    if notes:
        items.append(item("notes", "textarea", {"text": [notes]}))
    return items
