"""Bad input files: each gets an error that names the file and the line, never a silent pass."""

from __future__ import annotations

import json
import os

import pytest

from ftexp.config.preflight import compose_config
from ftexp.data.base import DataError
from ftexp.utils.build import build

GOOD = [{"text": f"card arrive post request {i}", "label": "card_arrival"} for i in range(6)] + \
       [{"text": f"top up money request {i}", "label": "top_up"} for i in range(6)]


def load(folder, *overrides):
    return build(compose_config([f"data.path={folder}", "data.slices=[]", *overrides]).data, data_dir="unused", seed=0)


def lines(rows):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "test.jsonl").write_text(lines([{"text": "card arrive post question", "label": "card_arrival"},
                                                {"text": "top up money question", "label": "top_up"}]))
    return tmp_path


@pytest.mark.parametrize("bad_line, overrides, message", [
    ('{"text": "broken", "label": ', [], r"train.jsonl, line 4: not valid JSON"),
    ('["a", "list"]', [], r"train.jsonl, line 4: expected a JSON object, got list"),
    ({"label": "top_up"}, [], r"train.jsonl, line 4: field 'text' is missing"),
    ({"text": "   ", "label": "top_up"}, [], r"train.jsonl, line 4: field 'text' is empty"),
    ({"text": 12345, "label": "top_up"}, [], r"train.jsonl, line 4: field 'text' must be a string, got int"),
    ({"text": "x y", "label": ["top_up"]}, [], r"train.jsonl, line 4: the label must be a string or an integer"),
    ({"text": "x y", "label": "refund"}, ["data.labels=[card_arrival,top_up]"],
     r"train.jsonl, line 4: label 'refund' is not one of data.labels"),
    ({"text": "x y", "label": "top_up", "tags": "a"}, ["data.multi_label_field=tags"],
     r"test.jsonl, line 1: field 'tags' \(data.multi_label_field\) is missing"),
])
def test_bad_record_names_file_and_line(folder, bad_line, overrides, message):
    rows = GOOD[:3] + [bad_line] + GOOD[3:]
    (folder / "train.jsonl").write_text(lines(rows))
    with pytest.raises(DataError, match=message):
        load(folder, *overrides)


def test_invalid_utf8_names_the_line(folder):
    (folder / "train.jsonl").write_bytes(lines(GOOD[:2]).encode() + b'{"text": "caf\xe9", "label": "top_up"}\n')
    with pytest.raises(DataError, match=r"train.jsonl, line 3: not valid UTF-8"):
        load(folder)


def test_unreadable_file_is_named(folder):
    path = folder / "train.jsonl"
    path.write_text(lines(GOOD))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read any file (root)")
        with pytest.raises(DataError, match=r"train.jsonl: cannot be read"):
            load(folder)
    finally:
        path.chmod(0o644)


def test_a_directory_in_place_of_a_file_is_named(folder):
    (folder / "train.jsonl").mkdir()
    with pytest.raises(DataError, match=r"train.jsonl does not exist"):
        load(folder)


def test_malformed_csv_and_unknown_format(folder):
    (folder / "train.csv").write_text('text,label\n"unclosed quote,top_up\n')
    with pytest.raises(DataError, match=r"train.csv, line 2: malformed CSV: .*never closed"):
        load(folder, "data.train_file=train.csv")
    (folder / "train.csv").write_text('text,label\ncard arrive post,card_arrival\n"two\nlines",top_up\njust text\n')
    with pytest.raises(DataError, match=r"train.csv, line 5: fewer values than the header"):
        load(folder, "data.train_file=train.csv")  # the record after a quoted line break: line numbers still right
    (folder / "train.txt").write_text("hello\n")
    with pytest.raises(DataError, match=r"unsupported file type '.txt'"):
        load(folder, "data.train_file=train.txt")


def test_prompt_template_with_an_unknown_field_names_the_record(folder):
    (folder / "train.jsonl").write_text(lines(GOOD))
    with pytest.raises(DataError, match=r"test.jsonl, line 1: data.prompt_template .* uses 'query'"):
        load(folder, "data.prompt_template='{query}'")


def test_csv_line_numbers_survive_blank_lines_and_odd_characters_in_cells(folder):
    """Records are numbered by the file's own lines: a blank line, a quoted line break and a form feed
    or line separator inside a cell shift nothing."""
    (folder / "train.csv").write_text('text,label\ncard arrive\x0cpost,card_arrival\n\n"two\nlines\u2028x",top_up\n'
                                      'only text\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train.csv, line 6: fewer values than the header"):
        load(folder, "data.train_file=train.csv")
