"""Several raters: Krippendorff's alpha against hand-computed values, the disagreement list, the combined
verdict compared with the metrics, and one rater marked as not measurable."""

from __future__ import annotations

import json

import pytest

from ftexp.review import ReviewError
from ftexp.review.__main__ import main
from ftexp.review.importer import import_ratings
from ftexp.review.raters import ONE_RATER, alpha_of, between_raters, counts
from tests.helpers.review import HUMAN, export, fixture_outputs


def by_rater(**columns):
    """rater -> {id: ratings} from correctness columns (None = not rated by that rater)."""
    return {name: {f"u{i}": {"correctness": v, "helpfulness": 3, "tone": 3, "notes": None}
                   for i, v in enumerate(vals) if v is not None} for name, vals in columns.items()}


def test_alpha_matches_the_hand_computed_values():
    # Two raters, five outputs, one disagreement (u2): n = 10 values, N1 = N0 = 5; D = (2^2 - 1 - 1) / 1 = 2;
    # expected = 10^2 - 5^2 - 5^2 = 50; alpha = 1 - 9 * 2 / 50 = 0.64.
    two = by_rater(ann=[1, 0, 1, 1, 0], bob=[1, 0, 0, 1, 0])
    ids = [f"u{i}" for i in range(5)]
    assert alpha_of(counts(two, ids)) == pytest.approx(0.64)
    # Three raters with gaps: u0 (1, 1), u1 (0, 0, 0), u2 (1, 0, 1), u3 rated once (drops out).
    # n = 8, N1 = N0 = 4; D = 0 + 0 + (9 - 4 - 1) / 2 = 2; expected = 64 - 16 - 16 = 32; alpha = 1 - 7 * 2 / 32.
    three = by_rater(ann=[1, 0, 1, None], bob=[1, 0, 0, 1], cy=[None, 0, 1, None])
    got = between_raters(three, [f"u{i}" for i in range(4)])
    assert got["krippendorff_alpha"] == pytest.approx(18 / 32) and got["n_units"] == 3
    assert got["disagreements"] == [{"id": "u2", "correctness": {"ann": 1, "bob": 0, "cy": 1}}]
    lo, hi = got["krippendorff_alpha_ci95"] or (None, None)
    assert got["krippendorff_alpha_ci95"] is None or lo <= hi
    perfect = between_raters(by_rater(ann=[1, 0, 1], bob=[1, 0, 1]), ["u0", "u1", "u2"])
    assert perfect["krippendorff_alpha"] == pytest.approx(1.0) and perfect["disagreements"] == []
    same = between_raters(by_rater(ann=[1, 1], bob=[1, 1]), ["u0", "u1"])
    assert same["krippendorff_alpha"] is None and "same value" in same["krippendorff_alpha_undefined"]


def rater_file(path, ratings):
    path.write_text("".join(json.dumps({"id": i, "correctness": c, "helpfulness": h, "tone": t, "notes": n}) + "\n"
                            for i, (c, h, t, n) in ratings.items()))
    return path


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    export(d, {"qa": fixture_outputs()}, n=50)
    return d


def test_two_raters_import_agreement_disagreements_and_the_majority_against_the_metrics(run_dir, capsys):
    ann = {f"qa/test/{i}": (*h, None) for i, h in enumerate(HUMAN)}
    bob = dict(ann)
    bob["qa/test/0"] = (0, 2, 2, "wrong dosage")  # disagree on 0 (a tie: left out), agree elsewhere
    bob["qa/test/8"] = (1, 4, 4, None)  # only bob: one rating, its own verdict
    folder = run_dir / "review"
    rater_file(folder / "ratings-ann.jsonl", ann)
    rater_file(folder / "ratings-bob.jsonl", bob)
    assert main(["import", str(folder), str(run_dir), "--no-wandb"]) == 0
    out = capsys.readouterr().out
    assert "between 2 raters (ann, bob)" in out and "to adjudicate (1 outputs" in out and "qa/test/0" in out
    review = json.loads((run_dir / "results.json").read_text())["review"]
    r = review["raters"]
    # units qa/test/0..7: 3 + 5 values... ann [1,1,1,0,0,0,0,0], bob [0,1,1,0,0,0,0,0]: n = 16, N1 = 5, N0 = 11,
    # D = 2 (unit 0); expected = 256 - 25 - 121 = 110; alpha = 1 - 15 * 2 / 110 = 8 / 11.
    assert r["krippendorff_alpha"] == pytest.approx(8 / 11) and r["n_units"] == 8
    assert r["disagreements"] == [{"id": "qa/test/0", "correctness": {"ann": 1, "bob": 0}}]
    assert r["ties"] == ["qa/test/0"] and r["n_rated_by"] == {"ann": 8, "bob": 9}
    a = review["sample"]["agreement"]  # the tie is out: rows 1-7 and 8 (auto fail, bob says correct)
    assert a["n"] == 8 and a["n_auto_pass"] == 4 and a["n_auto_pass_human_fail"] == 2
    assert a["n_auto_fail_human_pass"] == 1
    assert review["sample"]["helpfulness"] == pytest.approx((4 + 4 + 2 + 3 + 1 + 2 + 1 + 4) / 8)


def test_one_rater_marks_the_agreement_between_people_not_measurable(run_dir):
    rater_file(run_dir / "review" / "ratings-ann.jsonl", {f"qa/test/{i}": (*h, None) for i, h in enumerate(HUMAN)})
    review = import_ratings(run_dir / "review", run_dir, use_wandb=False)
    r = review["raters"]
    assert r["n_raters"] == 1 and r["krippendorff_alpha"] is None and r["krippendorff_alpha_undefined"] == ONE_RATER
    assert review["sample"]["agreement"]["cohen_kappa"] == pytest.approx(9 / 17)  # as with one file before


def test_a_folder_without_rater_files_or_a_rater_twice_is_refused(run_dir, tmp_path):
    with pytest.raises(ReviewError, match="without ratings-<rater>.jsonl"):
        import_ratings(tmp_path, run_dir, use_wandb=False)
    f = rater_file(run_dir / "review" / "ratings-ann.jsonl", {"qa/test/0": (1, 5, 5, None)})
    with pytest.raises(ReviewError, match="rater.s. ann named by more than one file"):
        import_ratings([f, run_dir / "review"], run_dir, use_wandb=False)


def test_compare_shows_human_correctness_with_its_wilson_interval_and_the_raters_alpha(run_dir):
    from types import SimpleNamespace

    from ftexp.compare.collect import job_metrics
    from ftexp.compare.report import shown_metrics

    folder = run_dir / "review"
    ann = {f"qa/test/{i}": (*h, None) for i, h in enumerate(HUMAN)}
    rater_file(folder / "ratings-ann.jsonl", ann)
    rater_file(folder / "ratings-bob.jsonl", {**ann, "qa/test/0": (0, 2, 2, None)})
    import_ratings(folder, run_dir, use_wandb=False)
    m = job_metrics(json.loads((run_dir / "results.json").read_text()))
    # 2 correct of 7 (the tie on qa/test/0 left out); Wilson 95 %, z = 1.95996: centre (2/7 + z^2/14) / (1 + z^2/7),
    # half z / (1 + z^2/7) * sqrt((2/7)(5/7)/7 + z^2/196) -> 0.0822 to 0.6411
    assert m["review/sample/correctness"] == pytest.approx(2 / 7)
    assert (m["review/sample/correctness_ci95_low"], m["review/sample/correctness_ci95_high"]) == \
        (pytest.approx(0.08221, abs=1e-4), pytest.approx(0.64106, abs=1e-4))
    assert m["review/raters/krippendorff_alpha"] == pytest.approx(8 / 11)
    assert m["review/sample/agreement/auto_pass_human_fail_rate"] == pytest.approx(2 / 4)
    cells = [SimpleNamespace(jobs=[SimpleNamespace(metrics=m)])]
    shown = shown_metrics(["review"], cells, "qa/test/rougeL")
    for key in ("review/sample/correctness", "review/sample/correctness_ci95_low",
                "review/sample/correctness_ci95_high",
                "review/sample/agreement/auto_pass_human_fail_rate", "review/raters/krippendorff_alpha"):
        assert key in shown
