"""``ftexp review serve`` in this process: the rater's order, per-answer atomic writes, resume, the lock,
bad answers refused with nothing written, the token, and no automated score in what the page gets."""

from __future__ import annotations

import json

import pytest

from ftexp.review import ReviewError
from ftexp.review.__main__ import main
from ftexp.review.importer import import_ratings
from ftexp.review.sitting import Sitting
from tests.helpers.review import read_jsonl
from tests.helpers.review_serve import answer, auto_values, call, review_run, serving


@pytest.fixture
def runs(tmp_path):
    return [review_run(tmp_path / "small", "small"), review_run(tmp_path / "large", "large")]


def ids_in_order(sitting):
    return [(k, sitting.runs[k].rows[i]["id"]) for k, i in sitting.order]


def test_order_is_fixed_per_rater_interleaves_runs_and_hides_them(runs):
    a, a2, b = Sitting(runs, "ann"), Sitting(runs, "ann"), Sitting(runs, "bob")
    assert ids_in_order(a) == ids_in_order(a2) and ids_in_order(a) != ids_in_order(b)
    assert len(a) == 18 and sorted(ids_in_order(a)) == sorted(ids_in_order(b))  # every output once
    first_half = {k for k, _ in a.order[:9]}
    assert first_half == {0, 1}  # interleaved, not run after run
    item = a.item(0)
    assert set(item) == {"index", "n", "prompt", "reference", "output", "red_team", "answer"}
    red = [a.item(i) for i in range(len(a)) if a.item(i)["red_team"]]
    assert [r["prompt"] for r in red] == ["attack", "attack"] and all(r["reference"] is None for r in red)


def test_each_answer_is_written_at_once_to_its_runs_file_and_import_reads_it(runs):
    s = Sitting(runs, "ann").open()
    try:
        written = {}
        for index in range(4):
            k, i = s.order[index]
            s.answer(index, answer(index % 2, 3, 4 + index % 2, f"note {index}"))
            written.setdefault(k, {})[s.runs[k].rows[i]["id"]] = (index % 2, 3, 4 + index % 2, f"note {index}")
            for kk, run in enumerate(s.runs):  # after every answer, each run's file holds exactly its answers
                on_disk = {r["id"]: (r["correctness"], r["helpfulness"], r["tone"], r["notes"])
                           for r in (read_jsonl(run.path) if run.path.exists() else [])}
                assert on_disk == written.get(kk, {})
        assert not list(runs[0].glob("review/.ratings-ann.jsonl.*.tmp"))  # no temp file left behind
    finally:
        s.close()
    k = s.order[0][0]
    review = import_ratings(s.runs[k].path, runs[k], use_wandb=False)
    assert review["n_rated"] == len(written[k]) and review["format"] == "jsonl"


def test_resume_where_the_rater_stopped_and_re_answer_keeps_one_line(runs):
    with_lock = Sitting(runs, "ann").open()
    for index in range(3):
        with_lock.answer(index, answer(1, 5, 5))
    with_lock.answer(1, answer(0, 1, 1, "changed my mind"))
    with_lock.close()
    again = Sitting(runs, "ann").open()
    try:
        assert again.resume_at() == 3 and again.n_rated() == 3
        assert again.item(1)["answer"] == {"correctness": 0, "helpfulness": 1, "tone": 1, "notes": "changed my mind"}
    finally:
        again.close()


def test_a_second_server_on_the_same_raters_file_is_refused_another_rater_is_not(runs):
    first = Sitting(runs, "ann").open()
    try:
        with pytest.raises(ReviewError, match="open in another `ftexp review serve` .*process"):
            Sitting(runs, "ann").open()
        Sitting(runs, "bob").open().close()
    finally:
        first.close()
    Sitting(runs, "ann").open().close()  # released


@pytest.mark.parametrize("bad,message", [
    (answer(2, 3, 3), "correctness is 2: expected an integer from 0 to 1"),
    (answer(1, 6, 3), "helpfulness is 6"),
    (answer(1, 3, 0), "tone is 0"),
    ({"correctness": 1, "helpfulness": 3}, "tone is None"),
    (answer(1, "3", 3), "helpfulness is '3'"),
    (answer(True, 3, 3), "correctness is True"),
    ([1, 2, 3], "expected a JSON object"),
])
def test_an_out_of_range_answer_gets_400_and_nothing_is_written(runs, bad, message):
    s = Sitting(runs, "ann").open()
    try:
        with serving(s) as server:
            base = server.url
            assert call(base + "api/item/0", answer(1, 4, 4))[0] == 200
            before = {run.path: run.path.read_bytes() if run.path.exists() else None for run in s.runs}
            status, body = call(base + "api/item/1", bad)
            assert status == 400 and message in body["error"] and body["error"].startswith("not saved")
            assert {run.path: run.path.read_bytes() if run.path.exists() else None for run in s.runs} == before
            assert call(base + "api/item/999", answer(1, 4, 4))[0] == 400
            assert call(base + "api/state")[1]["n_rated"] == 1
    finally:
        s.close()


def test_the_page_and_its_json_hold_no_automated_score(runs):
    s = Sitting(runs, "ann").open()
    try:
        with serving(s) as server:
            served = [call(server.url, raw=True)[1], json.dumps(call(server.url + "api/state")[1])]
            served += [json.dumps(call(f"{server.url}api/item/{i}")[1]) for i in range(len(s))]
    finally:
        s.close()
    assert "<title>ftexp review</title>" in served[0] and "small says" in "".join(served)
    text = "".join(served)
    assert "auto_" not in text and "rougeL" not in text and "small/" not in text
    for value in auto_values(runs[0]) + auto_values(runs[1]):
        assert value not in text, value


def test_another_address_needs_the_token(runs):
    s = Sitting(runs, "ann").open()
    try:
        with serving(s, host="127.0.0.2") as server:
            assert server.token and server.url.endswith("?token=" + server.token)
            bare = server.url.split("?")[0]
            assert call(bare + "api/state")[0] == 403 and call(bare + "api/item/0", answer(1, 1, 1))[0] == 403
            assert call(f"{bare}api/state?token={server.token}")[0] == 200
    finally:
        s.close()
    assert not s.runs[0].path.exists() and not s.runs[1].path.exists()


def test_cli_bad_input_one_line_and_exit_1(runs, tmp_path, capsys):
    (tmp_path / "bare").mkdir()
    for args, expected in ((["serve", str(tmp_path / "nope"), "--rater", "ann"], "does not exist"),
                           (["serve", str(tmp_path / "bare"), "--rater", "ann"], "no outputs for review"),
                           (["serve", str(runs[0]), "--rater", "../x"], "rater name '../x'"),
                           (["serve", str(runs[0]), str(runs[0]), "--rater", "ann"], "named twice")):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith("ftexp.review: error:") and expected in err and err.count("\n") == 1
