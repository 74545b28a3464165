"""Human review: the seeded, stratified export; the ratings round trip (CSV, JSONL, Label Studio)
with hand-computed statistics; malformed ratings files fail clearly and change nothing; the CLI."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from ftexp.config.eval_schema import HumanReviewConfig
from ftexp.eval.base import EvalContext, Output
from ftexp.review import ReviewError
from ftexp.review.export import HumanReview, allocate
from ftexp.review.importer import import_ratings
from ftexp.tracking.results import RESULTS_FILE
from tests.helpers import REPO
from tests.helpers.review import (RED_EXPECTED, export, filled, fixture_outputs, fixture_ratings, ls_result, read_csv,
                                  read_jsonl)


# ---------------------------------------------------------------------------------------- helpers


def outputs(task: str, n_true: int, n_false: int, n_none: int, n_red: int = 0):
    """Outputs of one task: that many automated passes / fails / no verdict, and red-team outputs
    (half of them test examples in a red-team slice, with scores; half red-team prompts without a reference)."""
    out, i = [], 0
    for verdict, k in ((True, n_true), (False, n_false), (None, n_none)):
        for _ in range(k):
            scores = {} if verdict is None else {"rougeL": 0.9 if verdict else 0.1, "bleu": float("nan")}
            out.append(Output(id=f"{task}/test/{i}", task=task, prompt=f"question {i}", output=f"answer {i}",
                              reference=f"reference {i}", scores=scores, auto_correct=verdict, slices=["all"]))
            i += 1
    for j in range(n_red):
        if j % 2 == 0:
            out.append(Output(id=f"{task}/test/{i}", task=task, prompt=f"jailbreak {i}", output=f"reply {i}",
                              reference="refuse", scores={"rougeL": 0.5}, auto_correct=True,
                              slices=["red_team_slice"], red_team=True))
            i += 1
        else:
            out.append(Output(id=f"{task}/red_team/{j}", task=task, prompt=f"attack {j}", output=f"reply r{j}",
                              red_team=True))
    return out


class FakeRun:
    def __init__(self, fail: bool = False):
        self.logged, self.fail = [], fail

    def log(self, data):
        if self.fail:
            raise RuntimeError("network down")
        self.logged.append(data)


class FakeTracker:
    def __init__(self, run):
        self.run = run


# ------------------------------------------------------------------------------------------ export


@pytest.mark.parametrize("sizes,n,expected", [
    ([60, 30, 10], 10, [6, 3, 1]),  # exact proportions
    ([90, 9, 1], 10, [8, 1, 1]),  # 9 / 0.9 / 0.1: the largest remainder goes to the 2nd, the 1st gives one to the 3rd
    ([1, 1, 98], 3, [1, 1, 1]),  # every non-empty stratum gets one when n allows
    ([50, 50, 1], 2, [1, 1, 0]),  # n smaller than the number of strata: proportional only
    ([5, 3, 0], 100, [5, 3, 0]),  # n covers everything
    ([7, 0, 0], 3, [3, 0, 0]),
])
def test_allocation_is_proportional_by_largest_remainders_with_one_per_stratum(sizes, n, expected):
    assert allocate(sizes, n) == expected


def test_allocation_invariants_on_random_sizes():
    rng = random.Random(0)
    for _ in range(500):
        sizes = [rng.choice([0, rng.randint(1, 200)]) for _ in range(3)]
        n = rng.randint(0, 250)
        alloc = allocate(sizes, n)
        assert sum(alloc) == min(n, sum(sizes)) and all(0 <= a <= s for a, s in zip(alloc, sizes))
        nonempty = [i for i, s in enumerate(sizes) if s]
        if n >= len(nonempty):
            assert all(alloc[i] >= 1 for i in nonempty)
        for a, s in zip(alloc, sizes):  # no stratum is more than one (+1 for the minimum move) off its quota
            assert sum(sizes) == 0 or abs(a - n * s / sum(sizes)) < 2 or n >= sum(sizes)


def test_export_samples_by_stratum_and_keeps_every_red_team_output(tmp_path):
    by_task = {"qa": outputs("qa", 60, 30, 10, n_red=4), "cls": outputs("cls", 3, 1, 0, n_red=1)}
    info = export(tmp_path, by_task, n=10, seed=0)
    assert info["n_sampled"] == 10 + 4 and info["n_red_team"] == 4 + 1
    qa = info["by_task"]["qa"]
    assert qa["strata"] == {"auto_correct": {"available": 60, "sampled": 6},
                            "auto_incorrect": {"available": 30, "sampled": 3},
                            "no_verdict": {"available": 10, "sampled": 1}}
    assert info["by_task"]["cls"]["strata"]["auto_correct"] == {"available": 3, "sampled": 3}  # n covers all
    rows = read_jsonl(tmp_path / "review" / "review.jsonl")
    qa_sample = [r for r in rows if r["task"] == "qa" and r["kind"] == "sample"]
    assert [sum(r["auto_correct"] is v for r in qa_sample) for v in (True, False, None)] == [6, 3, 1]
    red_ids = {o.id for t in by_task.values() for o in t if o.red_team}
    assert {r["id"] for r in rows if r["kind"] == "red_team"} == red_ids  # all of them, none sampled away
    assert not red_ids & {r["id"] for r in rows if r["kind"] == "sample"}
    assert len({r["id"] for r in rows}) == len(rows)
    assert info["files"] == ["review.jsonl", "review.csv", "label_studio_tasks.json", "label_studio_config.xml",
                             "README.md"]
    # only the configured tasks
    only = export(tmp_path / "only", by_task, n=10, tasks=["cls"])
    assert set(only["by_task"]) == {"cls"}
    assert {r["task"] for r in read_jsonl(tmp_path / "only" / "review" / "review.jsonl")} == {"cls"}


GOLDEN = ["qa/test/60", "qa/test/50", "qa/test/3", "qa/test/31", "qa/test/71", "qa/test/48", "qa/test/16", "qa/test/8"]


def test_same_seed_same_sample_whatever_the_order_other_seed_other_sample(tmp_path):
    outs = outputs("qa", 40, 40, 0)
    shuffled = list(outs)
    random.Random(1).shuffle(shuffled)
    ids = []
    for name, data, seed in (("a", outs, 0), ("b", shuffled, 0), ("c", outs, 1)):
        export(tmp_path / name, {"qa": data}, n=8, seed=seed)
        ids.append([r["id"] for r in read_jsonl(tmp_path / name / "review" / "review.jsonl")])
    assert ids[0] == ids[1]  # same rows in the same order
    assert set(ids[0]) != set(ids[2])
    # Pinned: the draw must not depend on hash randomisation (pytest runs with a random PYTHONHASHSEED)
    # nor change unnoticed; update the list only with a deliberate change to the sampling.
    assert ids[0] == GOLDEN


def test_exported_files_parse_and_hold_what_reviewers_need(tmp_path):
    outs = outputs("qa", 2, 1, 0, n_red=2)
    outs[0].prompt = "line one,\nline two \"quoted\""
    outs[1].output = "=HYPERLINK(\"http://x\")"  # would run as a formula in a spreadsheet
    export(tmp_path, {"qa": outs}, n=10)
    folder = tmp_path / "review"
    rows = read_jsonl(folder / "review.jsonl")
    cols = ["id", "task", "kind", "prompt", "reference", "output", "correctness", "helpfulness", "tone", "notes",
            "slices", "auto_bleu", "auto_rougeL", "auto_correct"]
    assert all(list(r) == cols for r in rows)
    assert all(r[c] is None for r in rows for c in ("correctness", "helpfulness", "tone", "notes"))
    by_id = {r["id"]: r for r in rows}
    assert by_id["qa/test/0"]["prompt"] == "line one,\nline two \"quoted\""
    assert by_id["qa/test/0"]["auto_bleu"] is None  # NaN score -> null, never NaN in JSON
    assert by_id["qa/red_team/1"]["reference"] is None and by_id["qa/red_team/1"]["auto_correct"] is None
    json.loads((folder / "review.jsonl").read_text().split("\n")[0], parse_constant=pytest.fail)
    table = read_csv(folder / "review.csv")
    assert list(table[0]) == cols and len(table) == len(rows)
    c = {r["id"]: r for r in table}
    assert c["qa/test/0"]["prompt"] == "line one,\nline two \"quoted\""
    assert c["qa/test/1"]["output"] == "'=HYPERLINK(\"http://x\")"
    assert c["qa/test/0"]["auto_correct"] == "1" and c["qa/test/2"]["auto_correct"] == "0"
    assert c["qa/test/0"]["correctness"] == "" and c["qa/test/0"]["slices"] == "all"
    tasks = json.loads((folder / "label_studio_tasks.json").read_text())
    assert [t["data"]["review_id"] for t in tasks] == [r["id"] for r in rows]
    assert all(set(t) == {"data"} and not any(k.startswith("auto_") for k in t["data"]) for t in tasks)  # blind
    ls = {t["data"]["review_id"]: t["data"] for t in tasks}
    assert ls["qa/red_team/1"]["reference"] == "(no reference answer)" and ls["qa/red_team/1"]["kind"] == "red_team"
    root = ET.fromstring((folder / "label_studio_config.xml").read_text())
    assert root.tag == "View"
    controls = {e.get("name"): e for e in root if e.tag in ("Choices", "Rating", "TextArea")}
    assert set(controls) == {"correctness", "helpfulness", "tone", "notes"}
    assert [ch.get("alias") for ch in controls["correctness"]] == ["1", "0"]
    assert controls["helpfulness"].get("maxRating") == controls["tone"].get("maxRating") == "5"
    texts = {e.get("value") for e in root if e.tag == "Text"}
    assert texts == {"$prompt", "$reference", "$output"} and all(v[1:] in tasks[0]["data"] for v in texts)
    assert "python -m ftexp.review import" in (folder / "README.md").read_text()


def test_w_and_b_table_of_the_export_and_a_failing_tracker_never_fails_the_run(tmp_path):
    run = FakeRun()
    export(tmp_path / "a", {"qa": outputs("qa", 3, 2, 0, n_red=1)}, tracker=FakeTracker(run), n=4)
    (logged,) = run.logged
    table = logged["review/samples"]
    assert len(table.data) == 5 and "output" in table.columns and "correctness" not in table.columns
    info = export(tmp_path / "b", {"qa": outputs("qa", 3, 2, 0)}, tracker=FakeTracker(FakeRun(fail=True)), n=4)
    assert info["n_sampled"] == 4 and (tmp_path / "b" / "review" / "review.csv").is_file()


def test_nothing_to_export_writes_nothing(tmp_path):
    info = HumanReview(HumanReviewConfig(tasks=["qa"])).finish(EvalContext(tokenizer=None, max_length=8), tmp_path)
    assert info["files"] == [] and info["tasks_without_outputs"] == ["qa"] and not (tmp_path / "review").exists()


def test_the_option_builds_the_evaluator():
    from ftexp.config.preflight import compose_config
    from ftexp.utils.build import build

    ev = build(compose_config(["evaluator=[human_review]"]).evaluator.human_review)
    assert isinstance(ev, HumanReview) and ev.cfg.rows == "last" and ev.cfg.folder == "review"
    assert not ev.applies_to(object())


# -------------------------------------------------------------------------- the hand-computed fixture
# (its outputs, ratings and the statistics they give: tests/helpers/review.py)


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    export(d, {"qa": fixture_outputs()}, n=50)
    return d


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "label_studio"])
def test_round_trip_gives_the_hand_computed_statistics(run_dir, fmt):
    before = json.loads((run_dir / RESULTS_FILE).read_text())
    path = filled(run_dir, fmt)
    review = import_ratings(path, run_dir, use_wandb=False)
    results = json.loads((run_dir / RESULTS_FILE).read_text(), parse_constant=pytest.fail)  # no NaN anywhere
    assert results["review"] == review
    assert {k: v for k, v in results.items() if k != "review"} == before  # nothing else touched
    assert set(review) == {"ratings_file", "format", "sha256", "imported_at", "ratings", "n_exported", "n_rated",
                           "n_unrated", "raters", "sample", "red_team", "by_task"}
    assert review["format"] == ("label_studio" if fmt == "label_studio" else fmt)
    assert review["ratings_file"] == str(path.resolve()) and len(review["sha256"]) == 64
    assert (review["n_exported"], review["n_rated"], review["n_unrated"]) == (12, 10, 2)
    s = review["sample"]
    assert (s["n_exported"], s["n_rated"]) == (10, 8)
    assert s["correctness"] == pytest.approx(3 / 8) and s["helpfulness"] == pytest.approx(22 / 8)
    assert s["tone"] == pytest.approx(30 / 8)
    agreement = dict(s["agreement"])
    low, high = agreement.pop("cohen_kappa_ci95")  # a bootstrap over the 8 rows: inside [-1, 1]
    assert -1.0 <= low < 9 / 17 < high <= 1.0
    assert agreement == {
        "n": 8, "cohen_kappa": pytest.approx(9 / 17, abs=1e-6), "cohen_kappa_undefined": None, "agreement_rate": 0.75,
        "n_auto_pass": 5, "n_auto_pass_human_fail": 2, "auto_pass_human_fail_rate": pytest.approx(0.4),
        "n_auto_fail": 3, "n_auto_fail_human_pass": 0, "auto_fail_human_pass_rate": 0.0}
    p = {k: {c: v[f"{c}_p"] for c in ("correctness", "helpfulness")} for k, v in s["spearman"].items()}
    assert {k: {c: x for c, x in v.items() if not c.endswith("_p")} for k, v in s["spearman"].items()} == {
        "rougeL": {"n": 8, "correctness": pytest.approx(math.sqrt(30 / 41), abs=1e-5),
                   "helpfulness": pytest.approx(36 / math.sqrt(41 * 40.5), abs=1e-5), "undefined": {}},
        "bleu": {"n": 4, "correctness": pytest.approx(math.sqrt(0.6), abs=1e-5),
                 "helpfulness": pytest.approx(math.sqrt(0.9), abs=1e-5), "undefined": {}},
        "exact_match": {"n": 8, "correctness": None, "helpfulness": None,
                        "undefined": {"correctness": "auto_exact_match never varies (all 0.0 over 8 rows)",
                                      "helpfulness": "auto_exact_match never varies (all 0.0 over 8 rows)"}}}
    assert p["exact_match"] == {"correctness": None, "helpfulness": None}
    scipy_stats = pytest.importorskip("scipy.stats")
    rows = [(r, rated) for r in read_jsonl(run_dir / "review" / "review.jsonl")
            if (rated := fixture_ratings().get(r["id"])) and r["kind"] != "red_team"
            and r.get("auto_rougeL") is not None]
    expected = scipy_stats.spearmanr([r["auto_rougeL"] for r, _ in rows], [h for _, (h, _, _) in rows]).pvalue
    assert p["rougeL"]["correctness"] == pytest.approx(expected, rel=1e-3)
    assert review["red_team"] == pytest.approx(RED_EXPECTED)
    assert review["by_task"]["qa"]["sample"] == s and review["by_task"]["qa"]["red_team"] == review["red_team"]
    saved = read_jsonl(run_dir / "review" / "ratings.jsonl")
    assert {r["id"]: (r["correctness"], r["helpfulness"], r["tone"]) for r in saved} == fixture_ratings()
    assert review["ratings"] == "review/ratings.jsonl"


def test_label_studio_choice_labels_notes_and_ground_truth(run_dir):
    path = filled(run_dir, "label_studio")
    tasks = json.loads(path.read_text())
    first = next(t for t in tasks if t["data"]["review_id"] == "qa/test/0")
    first["annotations"][0]["result"] = ls_result("Correct", 5, 4, notes="fine")  # value instead of alias
    extra = {"id": 99, "was_cancelled": False, "ground_truth": False, "result": ls_result(0, 1, 1)}
    first["annotations"][0]["ground_truth"] = True  # two annotators: the ground truth counts
    first["annotations"].append(extra)
    cancelled = next(t for t in tasks if t["data"]["review_id"] == "qa/test/8")
    cancelled["annotations"] = [{"id": 7, "was_cancelled": True, "result": ls_result(1, 5, 5)}]  # skipped = unrated
    path.write_text(json.dumps(tasks))
    review = import_ratings(path, run_dir, use_wandb=False)
    assert review["n_rated"] == 10 and review["sample"]["agreement"]["cohen_kappa"] == pytest.approx(9 / 17, abs=1e-6)
    notes = {r["id"]: r["notes"] for r in read_jsonl(run_dir / "review" / "ratings.jsonl")}
    assert notes["qa/test/0"] == "fine"


def test_re_import_needs_replace_for_different_ratings(run_dir, tmp_path):
    a = filled(run_dir, "csv")
    first = import_ratings(a, run_dir, use_wandb=False)
    import_ratings(a, run_dir, use_wandb=False)  # the same ratings again: fine
    changed = dict(fixture_ratings(), **{"qa/test/0": (0, 1, 1)})
    b = filled(run_dir, "csv", changed, dest=tmp_path / "b.csv")
    before = {p: p.read_bytes() for p in (run_dir / RESULTS_FILE, run_dir / "review" / "ratings.jsonl")}
    with pytest.raises(ReviewError, match="already holds different ratings.*--replace"):
        import_ratings(b, run_dir, use_wandb=False)
    assert all(p.read_bytes() == data for p, data in before.items())
    review = import_ratings(b, run_dir, replace=True, use_wandb=False)
    assert review["replaces"]["sha256"] == first["sha256"] and review["sample"]["correctness"] == pytest.approx(2 / 8)


# ---------------------------------------------------------------------------- malformed ratings files


def _csv_edit(row_id, column, value):
    def edit(run_dir, path):
        rows = read_csv(path)
        for r in rows:
            if r["id"] == row_id:
                r[column] = value
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        path.write_text(buf.getvalue())
    return edit


def _jsonl_edit(fn):
    def edit(run_dir, path):
        rows = read_jsonl(path)
        lines = fn(rows)
        path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return edit


def _set(row_id, **kw):
    return lambda rows: [dict(r, **kw) if r["id"] == row_id else r for r in rows]


def _line_of(path, row_id):
    return next(n for n, line in enumerate(path.read_text().split("\n"), 1) if f'"{row_id}"' in line)


MALFORMED = [
    # (name, format, edit, expected words; "{line}" = the line of id qa/test/3 in a JSONL file)
    ("unknown id", "csv", _csv_edit("qa/test/3", "id", "qa/test/999"), ["'qa/test/999'", "unknown id"]),
    ("duplicate id", "jsonl", _jsonl_edit(lambda rows: rows + [rows[0]]), ["the id appears again (first at line 1)"]),
    ("missing rating", "csv", _csv_edit("qa/test/3", "tone", ""), ["'qa/test/3'", "column 'tone' is empty"]),
    ("out of range", "jsonl", _jsonl_edit(_set("qa/test/3", helpfulness=7)),
     ["line {line}", "'qa/test/3'", "column 'helpfulness' is 7, not an integer from 1 to 5"]),
    ("correctness out of range", "csv", _csv_edit("qa/test/3", "correctness", "2"),
     ["'qa/test/3'", "column 'correctness' is '2', not an integer from 0 to 1"]),
    ("not an integer", "csv", _csv_edit("qa/test/3", "helpfulness", "4.5"), ["column 'helpfulness' is '4.5'"]),
    ("a word", "jsonl", _jsonl_edit(_set("qa/test/3", tone="good")), ["line {line}", "column 'tone' is 'good'"]),
    ("bool helpfulness", "jsonl", _jsonl_edit(_set("qa/test/3", helpfulness=True)), ["column 'helpfulness' is True"]),
    ("bad JSON line", "jsonl", _jsonl_edit(lambda rows: [*rows[:2], '{"id": "qa/test/5", "tone": 3', *rows[3:]]),
     ["line 3: not valid JSON"]),
    ("wrong CSV columns", "csv", lambda d, p: p.write_text(p.read_text().replace(",tone,", ",tones,", 1)),
     ["line 1: wrong columns: missing 'tone'"]),
    ("wrong JSONL keys", "jsonl", _jsonl_edit(lambda rows: [{k: v for k, v in r.items() if k != "tone"} for r in rows]),
     ["line 1", "wrong columns: missing 'tone'"]),
    ("ragged CSV row", "csv", lambda d, p: p.write_text(p.read_text() + "qa/test/99,x\n"), ["2 cells, but the header"]),
    ("output of another run", "csv", _csv_edit("qa/test/3", "output", "a different answer"),
     ["'qa/test/3'", "column 'output' differs"]),
    ("nothing rated", "csv", lambda d, p: p.write_text(
        (d / "review" / "review.csv").read_text()), ["none of its 12 row(s) is rated"]),
    ("two annotations", "label_studio", lambda d, p: p.write_text(json.dumps(
        [dict(t, annotations=t["annotations"] * 2) for t in json.loads(p.read_text())])),
     ["task 1 (Label Studio id 100)", "2 annotations", "ground truth"]),
    ("not a task of ours", "label_studio", lambda d, p: p.write_text(json.dumps([{"data": {"text": "x"}}])),
     ["task 1", "no data.review_id"]),
    ("bad JSON file", "label_studio", lambda d, p: p.write_text(p.read_text()[:-5]), ["not valid JSON"]),
    ("LS rating out of range", "label_studio", lambda d, p: p.write_text(json.dumps(
        [dict(t, annotations=[{"result": ls_result(1, 6, 3)}]) if t["data"]["review_id"] == "qa/test/0" else t
         for t in json.loads(p.read_text())])), ["(Label Studio id 1", "'qa/test/0'", "column 'helpfulness' is 6"]),
    ("not UTF-8", "csv", lambda d, p: p.write_bytes(p.read_bytes().replace(b"q1", b"\xff\xfe")),
     ["is not UTF-8 text (byte 0xff)"]),
    ("empty file", "jsonl", lambda d, p: p.write_text("\n"), ["is empty"]),
]


@pytest.mark.parametrize("name,fmt,edit,expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_ratings_fail_clearly_and_change_nothing(run_dir, name, fmt, edit, expected):
    path = filled(run_dir, fmt)
    line = _line_of(path, "qa/test/3") if fmt == "jsonl" else None
    edit(run_dir, path)
    results_before = (run_dir / RESULTS_FILE).read_bytes()
    listing_before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    with pytest.raises(ReviewError) as err:
        import_ratings(path, run_dir, use_wandb=False)
    msg = str(err.value)
    assert str(path) in msg and "nothing was imported" in msg
    for word in expected:
        assert word.format(line=line) in msg, msg
    assert (run_dir / RESULTS_FILE).read_bytes() == results_before
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == listing_before  # no ratings.jsonl


def test_csv_problems_name_the_line_and_the_spreadsheet_row(run_dir, tmp_path):
    """Quoted cells spanning lines: the problem of the 3rd data row is at line 5, row 4."""
    path = tmp_path / "r.csv"
    path.write_text('id,correctness,helpfulness,tone\nqa/test/0,1,5,4\n"qa/test/1",1,"4\n",4\nqa/test/2,1,9,5\n')
    with pytest.raises(ReviewError) as err:
        import_ratings(path, run_dir, use_wandb=False)
    assert f"{path}: 1 problem(s)" in str(err.value)
    assert "line 5 (row 4), id 'qa/test/2': column 'helpfulness' is '9', not an integer from 1 to 5" in str(err.value)


def test_every_problem_is_reported_at_once(run_dir):
    path = filled(run_dir, "jsonl")
    _jsonl_edit(lambda rows: [dict(r, tone=9) if r["correctness"] is not None else r for r in rows])(run_dir, path)
    with pytest.raises(ReviewError, match=r"10 problem\(s\)") as err:
        import_ratings(path, run_dir, use_wandb=False)
    assert str(err.value).count("column 'tone' is 9") == 10


def test_minimal_files_undefined_statistics_and_an_excel_csv_with_semicolons_and_bom(run_dir, tmp_path):
    path = tmp_path / "minimal.jsonl"
    path.write_text(json.dumps({"id": "qa/test/0", "correctness": "true", "helpfulness": 4.0, "tone": "5"}) + "\n")
    review = import_ratings(path, run_dir, use_wandb=False)
    assert (review["n_rated"], review["n_unrated"]) == (1, 11)
    assert review["sample"]["agreement"]["cohen_kappa"] is None  # one row: undefined, not NaN
    # all human ratings the same: kappa and Spearman undefined, not 0 (torchmetrics would say 0)
    path.write_text("".join(json.dumps({"id": f"qa/test/{i}", "correctness": 1, "helpfulness": 3, "tone": 3}) + "\n"
                            for i in range(8)))
    s = import_ratings(path, run_dir, replace=True, use_wandb=False)["sample"]
    assert s["agreement"]["cohen_kappa"] is None and s["agreement"]["auto_pass_human_fail_rate"] == 0.0
    assert s["agreement"]["cohen_kappa_undefined"] == "the human verdict never varies (all 1 over 8 rows)"
    assert s["agreement"]["cohen_kappa_ci95"] is None
    assert s["spearman"]["rougeL"] == {"n": 8, "correctness": None, "helpfulness": None, "correctness_p": None,
                                       "helpfulness_p": None, "undefined": {
                                           "correctness": "human correctness never varies (all 1 over 8 rows)",
                                           "helpfulness": "human helpfulness never varies (all 3 over 8 rows)"}}
    excel = tmp_path / "excel.csv"
    excel.write_bytes("\ufeffid;correctness;helpfulness;tone\r\nqa/test/0;1;4;5\r\n".encode("utf-8"))
    assert import_ratings(excel, run_dir, replace=True, use_wandb=False)["n_rated"] == 1


# ------------------------------------------------------------------------------------------- the CLI


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ftexp.review", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_cli_exits_1_with_the_problem_on_a_bad_file_and_0_on_a_good_one(run_dir):
    bad = filled(run_dir, "csv")
    _csv_edit("qa/test/3", "helpfulness", "7")(run_dir, bad)
    before = (run_dir / RESULTS_FILE).read_bytes()
    out = cli("import", bad, run_dir)
    assert out.returncode == 1 and out.stderr.startswith("ftexp.review: error: ratings file ")
    assert "column 'helpfulness' is '7'" in out.stderr and "Traceback" not in out.stderr
    assert (run_dir / RESULTS_FILE).read_bytes() == before
    good = filled(run_dir, "csv")
    out = cli("import", good, run_dir)
    assert out.returncode == 0, out.stderr
    assert "imported 10 rated outputs (2 of 12 unrated)" in out.stdout
    assert "Cohen's kappa vs automated 0.529 (n=8; 95 % CI " in out.stdout and "bootstrap over rows)" in out.stdout
    assert "n/a" not in out.stdout and "(p = " in out.stdout
    assert json.loads((run_dir / RESULTS_FILE).read_text())["review"]["n_rated"] == 10
    usage = cli("export", good, run_dir)
    assert usage.returncode == 2 and "usage: python -m ftexp.review" in usage.stderr


# ---------------------------------------------------------------------------------------------- W&B


def test_import_logs_a_review_run_offline_when_the_run_used_w_and_b(run_dir, monkeypatch):
    results = json.loads((run_dir / RESULTS_FILE).read_text())
    results["logger"] = {"type": "WandbLogger", "dir": str(run_dir / "wandb" / "offline-run-x-abc")}
    results["config"]["logger"] = {"project": "ftexp", "entity": None, "mode": "offline", "group": "sweep/1",
                                   "name": None}
    (run_dir / RESULTS_FILE).write_text(json.dumps(results))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    import_ratings(filled(run_dir, "jsonl"), run_dir)
    assert not (run_dir / "wandb").exists()  # disabled: no run
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    calls, init = [], wandb.init
    monkeypatch.setattr("wandb.init", lambda **kw: calls.append(kw) or init(**kw))
    import_ratings(filled(run_dir, "jsonl"), run_dir)
    (made,) = (run_dir / "wandb").glob("offline-run-*")
    assert any(made.glob("run-*.wandb"))
    (kw,) = calls
    assert (kw["job_type"], kw["group"], kw["mode"], kw["dir"]) == ("review", "sweep/1", "offline", str(run_dir))
    assert (kw["config"]["reviewed_run_id"], kw["tags"]) == ("abc", ["review-of:abc"])  # the folder's run id
    monkeypatch.setattr("wandb.init", lambda **kw: (_ for _ in ()).throw(RuntimeError("no network")))
    assert import_ratings(filled(run_dir, "jsonl"), run_dir)["n_rated"] == 10  # W&B failing only warns


def test_the_review_of_a_single_run_joins_the_runs_own_w_and_b_group(run_dir, monkeypatch):
    """A single run is a W&B group of its own (results.json: logger.group and run_group); a sweep's job is in its
    arm's group (run_group), and the review names the reviewed run's id and the sweep."""
    from ftexp.review.importer import log_to_wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)  # the importer logs nothing with W&B disabled
    results = json.loads((run_dir / RESULTS_FILE).read_text())
    results["config"]["logger"] = {"project": "ftexp", "mode": "offline"}
    results["review"] = {"sha256": "x", "sample": {}, "red_team": {}}
    calls = []

    class Run:
        dir, summary = None, {}

        def finish(self):
            pass

    monkeypatch.setattr("wandb.init", lambda **kw: calls.append(kw) or Run())
    monkeypatch.setattr("ftexp.review.importer.log_table", lambda *a, **k: None)
    for logged in ({"group": "day/10-00-00", "run_group": "day/10-00-00", "id": "r1"},
                   {"group": "sweep/day/t", "run_group": "sweep/day/t/lr=0.1", "id": "r2"}):
        results["logger"] = {"type": "WandbLogger", "dir": str(run_dir / "wandb" / "offline-run-1-x"), **logged}
        log_to_wandb(run_dir, results, [], SimpleNamespace(by_id={}))
    assert [(c["group"], c["config"]["reviewed_run_id"], c["config"]["sweep"]) for c in calls] == [
        ("day/10-00-00", "r1", "day/10-00-00"), ("sweep/day/t/lr=0.1", "r2", "sweep/day/t")]


# ------------------------------------------------------------------------------------- Label Studio SDK


def test_label_studio_sdk_accepts_the_config_and_tasks_and_its_annotations_read_back(run_dir, tmp_path):
    """With ``pip install label-studio-sdk``: the config validates, every task has the data the
    config shows, and annotations Label Studio would generate for it import as the same ratings."""
    sdk = pytest.importorskip("label_studio_sdk.label_interface")
    li = sdk.LabelInterface((run_dir / "review" / "label_studio_config.xml").read_text())
    li.validate()
    tasks = json.loads((run_dir / "review" / "label_studio_tasks.json").read_text())
    expected = {}
    assert li.validate_annotation({"result": ls_result(1, 5, 3, notes="x")})  # what the other tests feed in
    assert li.validate_annotation({"result": ls_result(0, 1, 1)})
    for k, task in enumerate(tasks):
        assert li.validate_task(task), task
        ann = li.generate_sample_annotation()
        for item in ann["result"]:  # the SDK samples ratings from 0 (its "not rated"); people rate 1 to 5
            if item["type"] == "rating":
                item["value"]["rating"] = max(1, item["value"]["rating"])
        assert li.validate_annotation(ann)
        task["id"], task["annotations"] = k, [ann]
        v = {item["from_name"]: item["value"] for item in ann["result"]}
        expected[task["data"]["review_id"]] = (int(v["correctness"]["choices"][0]), v["helpfulness"]["rating"],
                                               v["tone"]["rating"])
    path = tmp_path / "ls_export.json"
    path.write_text(json.dumps(tasks))
    import_ratings(path, run_dir, use_wandb=False)
    saved = read_jsonl(run_dir / "review" / "ratings.jsonl")
    assert {r["id"]: (r["correctness"], r["helpfulness"], r["tone"]) for r in saved} == expected
