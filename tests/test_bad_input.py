"""The bad-input matrix: every kind of bad input a user can hand ftexp, through the entry point a user
would use (the command line, a run, `ftexp.review import`, `ftexp.compare`).

For every case the same four promises are checked:
  1. a non-zero exit;
  2. a message that names what is wrong (the key, the file and line, or the value);
  3. no results.json that claims success;
  4. no file that existed before (data, ratings, an earlier run) changed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from tests.conftest import TINY

Attempt = Callable[[], Tuple[int, str]]  # runs the bad input: (exit code, what the user reads)


@dataclass
class Workspace:
    root: Path
    toy: Path  # a small dataset in the Banking77 layout
    review_run: Path  # a run that exported outputs for review
    base: List[str]  # overrides of a small job writing into root/run


def cli(ws: "Workspace", *args: str) -> Attempt:
    def attempt():  # in the workspace: whatever a broken check would write lands where it is looked for
        env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-m", "ftexp", *args], capture_output=True, text=True, timeout=300,
                              env=env, cwd=ws.root)
        return proc.returncode, proc.stderr
    return attempt


def in_process(main: Callable[[], object]) -> Attempt:
    """Call an entry point as its command would: SystemExit and return codes are the exit code."""
    def attempt():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code = main()
            except SystemExit as exc:
                code = exc.code
        return int(code or 0), err.getvalue()
    return attempt


def job(*overrides: str) -> Attempt:
    def main():
        from ftexp.config.preflight import compose_config
        from ftexp.job import run_job

        run_job(compose_config(list(overrides)))
    return in_process(main)


def review_import(ratings: Path, run_dir: Path) -> Attempt:
    from ftexp.review.__main__ import main

    return in_process(lambda: main(["import", str(ratings), str(run_dir), "--no-wandb"]))


def compare(folder: Path) -> Attempt:
    from ftexp.compare.__main__ import main

    return in_process(lambda: main([str(folder), "--out", str(folder / "report")]))


# ------------------------------------------------------------------------------------------ inputs

GOOD_ROWS = [{"text": f"card arrive post request {i}", "label": "card_arrival"} for i in range(12)] + \
            [{"text": f"top up money request {i}", "label": "top_up"} for i in range(12)]


def write_lines(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def train_file_with(ws: Workspace, bad_row, *overrides: str) -> Attempt:
    """The toy dataset with ``bad_row`` as line 4 of train.jsonl."""
    write_lines(ws.toy / "train.jsonl", GOOD_ROWS[:3] + [bad_row] + GOOD_ROWS[3:])
    return job(*ws.base, f"data.path={ws.toy}", "data.n_train=null", "data.n_test=null", "data.slices=[]",
               "data.val_fraction=0.2", *overrides)


def malformed_csv(ws: Workspace) -> Attempt:
    (ws.toy / "train.csv").write_text('text,label\n"unclosed quote,top_up\n')
    return train_file_with(ws, GOOD_ROWS[0], "data.train_file=train.csv")


def empty_test_split(ws: Workspace) -> Attempt:
    attempt = train_file_with(ws, GOOD_ROWS[0])
    (ws.toy / "test.jsonl").write_text("")
    return attempt


def ratings_with(ws: Workspace, row_id: str, **changes) -> Attempt:
    from tests.test_review import filled

    path = filled(ws.review_run, "jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    write_lines(path, [dict(r, **changes) if r["id"] == row_id else r for r in rows])
    return review_import(path, ws.review_run)


def half_written_sweep(ws: Workspace) -> Attempt:
    job_dir = ws.root / "sweep" / "0"
    job_dir.mkdir(parents=True)
    (job_dir / "results.json").write_text('{"status": "completed", "metrics": {"test/acc')  # killed mid-write
    return compare(ws.root / "sweep")


def completed_run_in_output_folder(ws: Workspace) -> Attempt:
    out = ws.root / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"status": "completed", "metrics": {"test/accuracy": 0.9}}))
    return job(*ws.base)


def completed_run_folder_from_the_command_line(ws: Workspace) -> Attempt:
    """Hydra's own files of the completed run (.hydra/) must stay as they are too."""
    completed_run_in_output_folder(ws)
    (ws.root / "run" / ".hydra").mkdir()
    (ws.root / "run" / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    return cli(ws, *[o for o in ws.base if not o.startswith("output_dir=")], f"hydra.run.dir={ws.root / 'run'}")


def resume_with_another_config(ws: Workspace) -> Attempt:
    """An interrupted run's checkpoints in the folder, and resume=true with another seed and rate."""
    from omegaconf import OmegaConf

    from ftexp.config.preflight import compose_config
    from ftexp.training.checkpoints import save_config

    save_config(ws.root / "run", OmegaConf.to_container(compose_config(list(ws.base)), resolve=True))
    return job(*ws.base, "seed=5", "optim.lr=0.5", "resume=true")


def gpu_trainer_without_a_gpu(ws: Workspace) -> Attempt:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return job(*ws.base, "trainer=gpu")


def no_hub(monkeypatch):
    """The hub fallbacks fail as they would without network (never touch the network in tests)."""
    from ftexp.data import sources
    from ftexp.data.base import DataError

    def offline(hub_id, *_):
        raise DataError(f"cannot reach '{hub_id}' on the Hub (offline)")
    monkeypatch.setattr(sources, "load_hub_rows", offline)
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# (name, makes the attempt, words of the message: {root} = the workspace, {toy} = the toy dataset)
CASES: List[Tuple[str, Callable[[Workspace], Attempt], List[str]]] = [
    # command line: refused before anything runs
    ("unknown group option", lambda ws: cli(ws, "model=mistral8b"),
     ["'mistral8b' is not an option of the config group 'model'", "Did you mean 'mistral7b'?"]),
    ("misspelt key", lambda ws: cli(ws, "trainer.max_epoch=3"),
     ["override 'trainer.max_epoch=3'", "'max_epoch' is not a key of trainer", "Did you mean 'max_epochs'?"]),
    ("misspelt key added with +", lambda ws: cli(ws, "+optim.learning_rate=1e-4"),
     ["override '+optim.learning_rate=1e-4'", "'learning_rate' is not a key of optim", "Valid keys: lr,"]),
    ("wrong type", lambda ws: cli(ws, "optim.lr=fast"), ["override 'optim.lr=fast'", "optim.lr must be a float, got 'fast'"]),
    ("out-of-range value in a sweep", lambda ws: cli(ws, "-m", "data.n_train=100,0"),
     ["data.n_train=0", "must be >= 1"]),
    ("malformed argument", lambda ws: cli(ws, "trainer.max_epochs"), ["override 'trainer.max_epochs'", "missing EQUAL"]),
    ("refused _target_", lambda ws: cli(ws, "model._target_=os.system"),
     ["model._target_='os.system'", "is not allowed", "allowed_targets"]),
    # data files
    ("malformed JSONL", lambda ws: train_file_with(ws, '{"text": "broken", "label": '),
     ["{toy}/train.jsonl, line 4: not valid JSON"]),
    ("missing field", lambda ws: train_file_with(ws, {"label": "top_up"}),
     ["{toy}/train.jsonl, line 4: field 'text' is missing"]),
    ("malformed CSV", malformed_csv, ["{toy}/train.csv, line 2: malformed CSV", "never closed"]),
    ("empty split", empty_test_split, ["the test split is empty ({toy}/test.jsonl holds no records)"]),
    ("unknown label", lambda ws: train_file_with(ws, {"text": "cancel my card", "label": "cancel_card"},
                                                "data.labels=[card_arrival,top_up,refund]"),
     ["{toy}/train.jsonl, line 4", "label 'cancel_card' is not one of data.labels"]),
    ("n_train too large", lambda ws: job(*ws.base, "data.n_train=99999"), ["data.n_train=99999"]),
    ("training on an evaluation-only dataset", lambda ws: job(*ws.base, "data=truthfulqa"),
     ["data 'truthfulqa' is for evaluation only"]),
    ("missing data directory", lambda ws: job(*ws.base, f"data_dir={ws.root}/no_such_dir"),
     ["{root}/no_such_dir/banking77/", "does not exist", "FTEXP_DATA_DIR"]),
    ("missing model path", lambda ws: job(*[o for o in ws.base if not o.startswith("model.")], "model=smollm2_135m",
                                         f"model.path={ws.root}/no_model"),
     ["model.path='{root}/no_model' is not a folder"]),
    ("NaN loss", lambda ws: job(*ws.base, "optim.lr=1e6", "trainer.gradient_clip_val=0"),
     ["stage 'finetune'", "NaN or infinite at step", "(it is 1e+06)"]),
    ("output folder holds a completed run", completed_run_in_output_folder,
     ["{root}/run/results.json holds a completed run; refusing to overwrite it"]),
    ("completed run folder named on the command line", completed_run_folder_from_the_command_line,
     ["{root}/run/results.json holds a completed run; refusing to overwrite it"]),
    ("resume with another config", resume_with_another_config,
     ["resume=true: {root}/run holds a run of another config", "optim.lr: 0.002 -> 0.5", "seed: 0 -> 5"]),
    ("missing data directory in a sweep", lambda ws: cli(
        ws, "-m", *[o for o in ws.base if not o.startswith(("output_dir=", "data_dir="))],
        f"data_dir={ws.root}/none_a,{ws.root}/none_b", f"hydra.sweep.dir={ws.root}/sweep_b"),
     ["Error executing job with overrides", "{root}/none_a/banking77/", "does not exist",  # (the first failure)
      "{root}/sweep_b/0/results.json (status: failed)"]),
    ("GPU trainer on a machine without one", gpu_trainer_without_a_gpu,
     ["trainer.accelerator='gpu'", "needs a CUDA GPU", "trainer=cpu"]),
    ("pack_length without packing", lambda ws: cli(ws, "trainer.pack_length=256"),
     ["trainer.pack_length=256", "packing, which is off"]),
    ("negative peak FLOP/s", lambda ws: cli(ws, "trainer.peak_tflops=-1"), ["trainer.peak_tflops=-1.0", "must be > 0"]),
    ("checkpoints every 0 steps", lambda ws: cli(ws, "trainer.checkpoint_every_n_steps=0"),
     ["trainer.checkpoint_every_n_steps=0", "must be >= 1"]),
    # review-rating files
    ("out-of-range rating", lambda ws: ratings_with(ws, "qa/test/3", helpfulness=7),
     ["{root}/ratings.jsonl", "'qa/test/3'", "column 'helpfulness' is 7, not an integer from 1 to 5"]),
    ("unknown review id", lambda ws: ratings_with(ws, "qa/test/3", id="qa/test/999"),
     ["{root}/ratings.jsonl", "'qa/test/999'", "unknown id"]),
    ("ratings of another run's outputs", lambda ws: ratings_with(ws, "qa/test/3", output="a different answer"),
     ["'qa/test/3'", "column 'output' differs"]),
    # results read back
    ("half-written results.json", half_written_sweep, ["no job of {root}/sweep completed", "0: unreadable", "results.json is not valid JSON"]),
]


# Cases that read the real datasets (FTEXP_DATA_DIR); the others run anywhere.
NEEDS_DATA = {"n_train too large", "training on an evaluation-only dataset", "missing model path", "NaN loss"}


@pytest.fixture
def workspace(request, tmp_path, cache_dir, toy_data, monkeypatch) -> Workspace:
    from tests.conftest import _data_dir
    from tests.test_review import export, fixture_outputs

    data_dir = _data_dir()
    if data_dir is None and request.node.callspec.params["name"] in NEEDS_DATA:
        pytest.skip("real datasets not found: set FTEXP_DATA_DIR to the folder holding banking77/")
    data_dir = data_dir or tmp_path / "no_data"
    no_hub(monkeypatch)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    review_run = tmp_path / "review_run"
    review_run.mkdir()
    export(review_run, {"qa": fixture_outputs()}, n=50)
    base = [*TINY, "trainer.log_every_n_steps=1", f"data_dir={data_dir}", f"cache_dir={cache_dir}",
            f"output_dir={tmp_path / 'run'}"]
    return Workspace(root=tmp_path, toy=toy_data, review_run=review_run, base=base)


def files(root: Path) -> Dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name,make,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_loudly_names_the_culprit_and_changes_nothing(workspace, name, make, expected):
    attempt = make(workspace)
    before = files(workspace.root)
    code, message = attempt()
    assert code != 0, f"{name}: exit code 0; output: {message[-2000:]}"
    for words in expected:
        words = words.format(root=workspace.root, toy=workspace.toy)
        assert words in message, f"{name}: {words!r} not in {message[-2000:]!r}"
    assert "Traceback" not in message, message
    after = files(workspace.root)
    changed = [str(p) for p, content in before.items() if after.get(p) != content]
    assert not changed, f"{name}: files that existed before changed: {changed}"
    for path in after:
        if path.name == "results.json" and path not in before:
            assert json.loads(path.read_text()).get("status") != "completed", f"{name}: {path} claims success"


def test_the_matrix_covers_every_kind_of_input():
    assert len(CASES) >= 15 and len({c[0] for c in CASES}) == len(CASES)
