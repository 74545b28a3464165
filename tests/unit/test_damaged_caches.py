"""Damaged files in the cache folder are rebuilt; a damaged checkpoint or an unwritable cache folder
ends the job in one paragraph. A cut-short cache entry gives a warning naming it and the numbers of a
run with a healthy cache; a cut-short checkpoint under resume=true is named, with what to do."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch

from ftexp.config.preflight import compose_config
from ftexp.job import run_job
from tests.helpers import TIMING

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


class Interrupted(Exception):
    """Stands for a kill right after Lightning wrote a checkpoint."""


def test_a_damaged_last_ckpt_stops_resume_with_one_paragraph(tiny_overrides, tmp_path, monkeypatch, capsys):
    from pytorch_lightning.callbacks import ModelCheckpoint

    save = ModelCheckpoint._save_checkpoint

    def save_then_stop(self, trainer, filepath):
        save(self, trainer, filepath)
        raise Interrupted(filepath)

    overrides = [*tiny_overrides, "save_model=false"]
    monkeypatch.setattr(ModelCheckpoint, "_save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        run_job(compose_config(overrides))
    monkeypatch.undo()
    run_dir = Path(compose_config(overrides).output_dir)
    ckpt = run_dir / "checkpoints" / "stage1" / "last.ckpt"
    _cut_short(ckpt)
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_info:
        run_job(compose_config([*overrides, "resume=true"]))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"ftexp: error: resume=true: the checkpoint {ckpt} is damaged" in err
    assert "Delete it" in err and "overwrite=true" in err and "Traceback" not in err
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and results["error"]["type"] == "DamagedCheckpoint"
    assert ckpt.is_file()  # not thrown away: what to do is the user's choice


def test_a_damaged_stage_checkpoint_is_named(tmp_path):
    from ftexp.training.checkpoints import DamagedCheckpoint, latest_stage

    path = tmp_path / "checkpoints" / "stage1.pt"
    path.parent.mkdir()
    torch.save({"index": 1}, path)
    assert latest_stage(tmp_path, 2) == (path, {"index": 1})
    _cut_short(path)
    with pytest.raises(DamagedCheckpoint, match=rf"the checkpoint {re.escape(str(path))} is damaged .*overwrite=true"):
        latest_stage(tmp_path, 2)


def _one_paragraph(overrides, capsys) -> str:
    """The job's error line, after checking that it failed with that one paragraph and recorded it."""
    with pytest.raises(SystemExit) as exit_info:
        run_job(compose_config(overrides))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    results = json.loads((Path(compose_config(overrides).output_dir) / "results.json").read_text())
    assert results["status"] == "failed" and results["error"]["type"] == "CacheDirError"
    return next(line for line in err.splitlines() if line.startswith("ftexp: error:"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("inside", ["", "ftexp"], ids=["the-folder", "a-folder-under-it"])
def test_an_unwritable_cache_folder_ends_in_one_paragraph_naming_it(inside, tiny_overrides, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        paragraph = _one_paragraph([*tiny_overrides, f"cache_dir={locked / inside}"], capsys)
    finally:
        locked.chmod(0o700)
    assert f"cannot write to the cache folder {locked} (Permission denied)" in paragraph
    assert "FTEXP_CACHE_DIR" in paragraph


def test_a_file_in_place_of_the_cache_folder_ends_in_one_paragraph_naming_it(tiny_overrides, tmp_path, capsys):
    """The same path as an unwritable folder, and one that root meets too."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    paragraph = _one_paragraph([*tiny_overrides, f"cache_dir={blocker / 'ftexp'}"], capsys)
    assert f"cannot write to the cache folder {blocker} (Not a directory)" in paragraph
    assert "FTEXP_CACHE_DIR" in paragraph
