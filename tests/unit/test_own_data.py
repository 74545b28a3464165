"""A user's own data: a dataset of its own (`data=own`), and the files such users hand over — a
spreadsheet's byte-order mark, a single class, a missing column, texts longer than the model takes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List

import pytest

from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from ftexp.data.base import DataError
from ftexp.job import run_job
from ftexp.utils.build import build
from tests.helpers import TINY

WORDS = {"card_arrival": "card arrive post", "top_up": "top up money", "refund": "refund return back"}
LONG = " ".join(f"word{i}" for i in range(60))  # far more than 24 tokens, whatever the tokenizer


def records(n: int, first: int, long_every: int = 0) -> List[dict]:
    """``n`` records with the user's own column names; every ``long_every``-th text is over-long."""
    out = []
    for i in range(n):
        label = list(WORDS)[i % 3]
        text = f"{WORDS[label]} request {first + i}"
        if long_every and i % long_every == 0:
            text = f"{LONG} {text}"
        out.append({"utterance": text, "intent": label})
    return out


def write_csv(path: Path, rows: List[dict], encoding: str = "utf-8") -> None:
    with path.open("w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def intents(tmp_path) -> Path:
    """The README's example: /my/intents/{train,test}.csv with columns utterance and intent."""
    folder = tmp_path / "intents"
    folder.mkdir()
    write_csv(folder / "train.csv", records(30, 0))
    write_csv(folder / "test.csv", records(9, 100))
    return folder


def own(folder: Path, *overrides: str) -> List[str]:
    return ["data=own", f"data.path={folder}", "data.train_file=train.csv", "data.test_file=test.csv",
            "data.text_field=utterance", "data.label_field=intent", *overrides]


def load(folder: Path, *overrides: str):
    return build(compose_config(own(folder, *overrides)).data, data_dir="unused", seed=0)


@pytest.fixture
def run_own(tmp_path, cache_dir, monkeypatch):
    """A tiny in-process run on own data, where no Banking77 exists and the hub is never asked."""
    from ftexp.data import sources

    def hub(hub_id, *_):
        raise AssertionError(f"own data asked the hub for '{hub_id}'")
    monkeypatch.setattr(sources, "load_hub_rows", hub)

    def start(folder: Path, *overrides: str) -> dict:
        cfg = compose_config([*TINY, *own(folder, "data.n_train=null", "data.n_test=null", *overrides),
                              f"data_dir={tmp_path / 'no_data_dir'}", f"cache_dir={cache_dir}",
                              f"output_dir={tmp_path / 'run'}", "save_model=false"])
        run_job(cfg)
        return json.loads((tmp_path / "run" / "results.json").read_text())
    return start


def test_own_data_is_named_after_its_folder_and_inherits_nothing(intents):
    cfg = compose_config(own(intents)).data
    assert cfg.name == "intents" and cfg.hub_id is None and cfg.subdir is None
    assert cfg.prompt_template == "{text}" and not cfg.slices and not cfg.red_team.prompts
    task = load(intents)
    assert task.name == "intents" and task.slices == {} and task.red_team == []
    first = task.splits["test"][0]
    assert first.prompt == first.text == "card arrive post request 100" and first.label == "card_arrival"
    assert {f["path"] for f in task.report["files"]} == {str(intents / "train.csv"), str(intents / "test.csv")}
    # what the user sets is theirs
    named = compose_config(own(intents, "data.name=mine", "data.prompt_template='Q: {text}'")).data
    assert named.name == "mine" and named.prompt_template == "Q: {text}"


def test_own_data_needs_its_folder():
    with pytest.raises(ConfigError, match=r"data.path=None: data=own .* set it to the folder that holds your files"):
        check_overrides(["data=own"])


def test_a_mistyped_own_file_names_the_path_and_never_banking77(intents, run_own, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_own(intents, "data.train_file=trian.csv")
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert (f"ftexp: error: data 'intents': {intents}/trian.csv does not exist: the folder {intents} has no file "
            f"'trian.csv' (its data files: test.csv, train.csv)") in err
    assert "banking77" not in err.lower() and "hub" not in err.lower() and "FTEXP_DATA_DIR" not in err


def test_a_single_class_training_set_is_one_paragraph_naming_the_file(tmp_path, run_own, capsys):
    folder = tmp_path / "one_label"
    folder.mkdir()
    for split, n, first in (("train", 20, 0), ("test", 5, 100)):
        write_csv(folder / f"{split}.csv", [dict(r, intent="top_up") for r in records(n, first)])
    with pytest.raises(SystemExit) as exit_:
        run_own(folder)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    message = (f"data 'one_label': the train data ({folder}/train.csv) has only the label 'top_up', and a classifier "
               f"needs at least two to choose between.")
    assert f"ftexp: error: {message}" in err and "Traceback" not in err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and results["error"]["type"] == "DataError"
    assert "\n" not in results["error"]["message"] and results["rows"] == []  # refused before row 0


@pytest.mark.parametrize("name", ["train.csv", "train.jsonl"])
def test_a_byte_order_mark_reads_like_none(intents, name):
    """Spreadsheet exports start the file with U+FEFF; it is not part of the first column's name."""
    rows = records(30, 0)
    if name.endswith(".csv"):
        write_csv(intents / name, rows, encoding="utf-8-sig")
    else:
        (intents / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8-sig")
    assert (intents / name).read_bytes()[:3] == b"\xef\xbb\xbf"
    task = load(intents, f"data.train_file={name}")
    assert len(task.splits["train"]) + len(task.splits["val"]) == 30
    assert task.labels == sorted(WORDS)


def test_a_missing_field_lists_only_the_fields_the_file_has(intents):
    rows = records(6, 0)
    rows[3] = {"utterance": "where is my card"}
    (intents / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as info:
        load(intents, "data.train_file=train.jsonl")
    assert str(info.value) == f"{intents}/train.jsonl, line 4: field 'intent' is missing (fields present: utterance)"


def test_over_long_prompts_are_counted_warned_and_recorded(tmp_path, run_own, caplog):
    folder = tmp_path / "long"
    folder.mkdir()
    write_csv(folder / "train.csv", records(30, 0, long_every=5))  # 6 over-long of 30
    write_csv(folder / "test.csv", records(9, 100, long_every=3))  # 3 over-long of 9
    with caplog.at_level("WARNING", logger="ftexp.data.base"):
        results = run_own(folder, "model.max_length=24")
    assert results["status"] == "completed"
    cut = results["data"]["cut_to_max_length"]
    assert cut["max_length"] == 24
    prompts = cut["prompts_cut_from_left"]
    assert prompts["test"] == 3 and prompts["train"] + prompts["val"] == 6, prompts
    assert set(cut["completions_cut_from_right"].values()) == {0}
    n_train, n_val = (results["data"]["counts"][s]["total"] for s in ("train", "val"))
    warning = (f"data 'long': {prompts['train']} of {n_train} train, {prompts['val']} of {n_val} val, 3 of 9 test "
               f"examples do not fit model.max_length=24 tokens: their prompts are cut from the left (the start is "
               f"lost); raise model.max_length or shorten the texts")
    assert warning in caplog.messages
    assert not any("completions are cut" in m for m in caplog.messages)


def test_data_path_alone_is_refused_only_where_nobody_chose_the_data(tmp_path):
    """With the default option, data.path would read the files as Banking77; a choice on the command line,
    or in an experiment file, says what they are."""
    with pytest.raises(ConfigError, match=r"override 'data.path=/my/intents': the files would be read as "
                                          r"data=banking77 \(the default\).*Add data=own"):
        check_overrides(["data.path=/my/intents"])
    check_overrides(["data=banking77", "data.path=/my/banking77"])
    check_overrides(["experiment=human_review", "data.path=/my/medquad"])  # the experiment chose data=medquad


def test_a_data_option_in_a_config_dir_trains_on_the_users_files(intents, tmp_path, cache_dir, monkeypatch, capsys):
    """The way to keep one's own data without editing conf/: an option file in a --config-dir, built on
    data=own, chosen by name; the command line's checks and the run both see it."""
    from ftexp.cli import main

    configs = tmp_path / "myconf"
    (configs / "data").mkdir(parents=True)
    (configs / "data" / "intents.yaml").write_text(
        "# My intents.\ndefaults:\n  - own\n  - _self_\n"
        f"path: {intents}\ntrain_file: train.csv\ntest_file: test.csv\ntext_field: utterance\nlabel_field: intent\n")
    main(["--config-dir", str(configs), "--help"])
    assert any(line.split()[:2] == ["intents", "My"] for line in capsys.readouterr().out.splitlines())
    check_overrides(["data=intents"], extra_dir=str(configs))
    with pytest.raises(ConfigError, match="data.n_train=0: must be >= 1"):
        check_overrides(["data=intents", "data.n_train=0"], extra_dir=str(configs))
    cfg = compose_config([*TINY, "data=intents", "data.n_train=null", "data.n_test=null", f"cache_dir={cache_dir}",
                          f"output_dir={tmp_path / 'run'}", "save_model=false"], extra_dir=str(configs))
    run_job(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed" and results["config"]["data"]["name"] == "intents"
    assert results["data"]["counts"]["test"]["total"] == 9
