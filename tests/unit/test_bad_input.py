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
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from tests.helpers import SHORT, TINY

Attempt = Callable[[], Tuple[int, str]]  # runs the bad input: (exit code, what the user reads)


@dataclass
class Workspace:
    root: Path
    toy: Path  # a small dataset in the Banking77 layout
    review_run: Path  # a run that exported outputs for review
    base: List[str]  # overrides of a small job writing into root/run
    configs: Path  # a folder of the user's own configs (a data option, experiment files), for --config-dir
    through_configs: bool = False  # every attempt goes through --config-dir configs and experiment=mine

    def args(self, *args: str) -> List[str]:
        """A command line, through the user's --config-dir and experiment file if ``through_configs``."""
        if not self.through_configs:
            return list(args)
        return ["--config-dir", str(self.configs), *args, "experiment=mine"]


def cli(ws: "Workspace", *args: str) -> Attempt:
    def attempt():  # in the workspace: whatever a broken check would write lands where it is looked for
        env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-m", "ftexp", *ws.args(*args)], capture_output=True, text=True,
                              timeout=300, env=env, cwd=ws.root)
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


def job(ws: "Workspace", *overrides: str) -> Attempt:
    """One run, in this process, composed as the command line would (with the --config-dir, if any)."""
    def main():
        from ftexp.config.preflight import compose_config
        from ftexp.job import run_job

        extra = str(ws.configs) if ws.through_configs else None
        overrides_ = [*overrides, "experiment=mine"] if ws.through_configs else list(overrides)
        run_job(compose_config(overrides_, extra_dir=extra))
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
    return job(ws, *ws.base, f"data.path={ws.toy}", "data.n_train=null", "data.n_test=null", "data.slices=[]",
               "data.val_fraction=0.2", *overrides)


def malformed_csv(ws: Workspace) -> Attempt:
    (ws.toy / "train.csv").write_text('text,label\n"unclosed quote,top_up\n')
    return train_file_with(ws, GOOD_ROWS[0], "data.train_file=train.csv")


def empty_test_split(ws: Workspace) -> Attempt:
    attempt = train_file_with(ws, GOOD_ROWS[0])
    (ws.toy / "test.jsonl").write_text("")
    return attempt


def ratings_with(ws: Workspace, row_id: str, **changes) -> Attempt:
    from tests.helpers.review import filled

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
    return job(ws, *ws.base)


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
    return job(ws, *ws.base, "seed=5", "optim.lr=0.5", "resume=true")


def single_class(ws: Workspace) -> Attempt:
    write_lines(ws.toy / "train.jsonl", [dict(r, label="top_up") for r in GOOD_ROWS])
    write_lines(ws.toy / "test.jsonl", [{"text": f"top up money later {i}", "label": "top_up"} for i in range(6)])
    return job(ws, *ws.base, f"data.path={ws.toy}", "data.n_train=null", "data.n_test=null", "data.slices=[]",
               "data.val_fraction=0.2")


def a_file(ws: Workspace) -> Path:
    """A file where a folder is expected (as root sees it, a folder without write permission)."""
    path = ws.root / "a_file"
    path.write_text("not a folder\n")
    return path


def finished_sweep(ws: Workspace) -> List[str]:
    """A completed sweep's folder, named as the new sweep's."""
    done = ws.root / "done"
    (done / "0").mkdir(parents=True)
    (done / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - seed=0\n")
    (done / "0" / "results.json").write_text(json.dumps({"status": "completed", "metrics": {"test/accuracy": 0.9}}))
    return [f"hydra.sweep.dir={done}"]


def truncated_results(ws: Workspace) -> Attempt:
    out = ws.root / "run"
    out.mkdir()
    (out / "results.json").write_text('{"status": "completed", "metrics": {"test/acc')  # cut short
    return job(ws, *ws.base)


def run_folder_in_use(ws: Workspace) -> Attempt:
    """Another run holds the folder's lock while this one starts."""
    from ftexp.utils.run_folder import run_folder_lock

    attempt = job(ws, *ws.base)

    def held():
        with run_folder_lock(ws.root / "run"):
            return attempt()
    return held


def gpu_trainer_without_a_gpu(ws: Workspace) -> Attempt:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return job(ws, *ws.base, "trainer=gpu")


def no_hub(monkeypatch):
    """The hub fallbacks fail as they would without network (never touch the network in tests)."""
    from ftexp.data import sources
    from ftexp.data.base import DataError

    def offline(hub_id, *_):
        raise DataError(f"cannot reach '{hub_id}' on the Hub (offline)")
    monkeypatch.setattr(sources, "load_hub_rows", offline)
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@dataclass
class Case:
    name: str
    make: Callable[[Workspace], Attempt]
    code: int  # the exit code: 2 for a command line refused before Hydra starts, 1 for a run that fails
    words: List[str]  # of the message: {root} = the workspace, {toy} = the toy dataset
    record: Optional[str] = None  # the results.json (under the workspace) that must say status: failed
    own_dir: bool = True  # also run through a --config-dir of the user's own


RUN = "run/results.json"  # where a failed run of ws.base records itself
CASES: List[Case] = [
    # command line: refused before anything runs
    Case("unknown group option", lambda ws: cli(ws, "model=mistral8b"), 2,
         ["'mistral8b' is not an option of the config group 'model'", "Did you mean 'mistral7b'?"]),
    Case("misspelt key", lambda ws: cli(ws, "trainer.max_epoch=3"), 2,
         ["override 'trainer.max_epoch=3'", "'max_epoch' is not a key of trainer", "Did you mean 'max_epochs'?"]),
    Case("misspelt key added with +", lambda ws: cli(ws, "+optim.learning_rate=1e-4"), 2,
         ["override '+optim.learning_rate=1e-4'", "'learning_rate' is not a key of optim", "Valid keys: lr,"]),
    Case("wrong type", lambda ws: cli(ws, "optim.lr=fast"), 2,
         ["override 'optim.lr=fast'", "optim.lr must be a float, got 'fast'"]),
    Case("out-of-range value in a sweep", lambda ws: cli(ws, "-m", "data.n_train=100,0"), 2,
         ["data.n_train=0: must be >= 1"]),
    Case("zero learning rate", lambda ws: cli(ws, "optim.lr=0"), 2, ["optim.lr=0.0: must be > 0"]),
    Case("negative training-set size", lambda ws: cli(ws, "data.n_train=-5"), 2, ["data.n_train=-5: must be >= 1"]),
    Case("malformed argument", lambda ws: cli(ws, "trainer.max_epochs"), 2,
         ["override 'trainer.max_epochs'", "missing EQUAL"]),
    Case("refused _target_", lambda ws: cli(ws, "model._target_=os.system"), 2,
         ["model._target_='os.system'", "is not allowed", "allowed_targets"]),
    Case("callback Hydra would build", lambda ws: cli(ws, "+hydra.callbacks.x._target_=builtins.open",
                                                       f"+hydra.callbacks.x._args_=[{ws.root}/made,w]"), 2,
         ["'builtins.open' is not a callback Hydra may build"]),
    Case("logging handler Hydra would build", lambda ws: cli(ws, "hydra.job_logging.handlers.file.class=os.system"), 2,
         ["hydra.job_logging.handlers.file.class: 'os.system' is not a logging class"]),
    Case("made-up launcher", lambda ws: cli(ws, "-m", "hydra.launcher._target_=made.up.Launcher"), 2,
         ["'made.up.Launcher' is not an installed Hydra launcher"]),
    Case("allowed_targets widened by a config file",
         lambda ws: cli(ws, "--config-dir", str(ws.configs), "experiment=widen"), 2,
         ["experiment/widen.yaml, line 2", "Only the command line may widen"], own_dir=False),
    Case("pack_length without packing", lambda ws: cli(ws, "trainer.pack_length=256"), 2,
         ["trainer.pack_length=256", "packing, which is off"]),
    Case("negative peak FLOP/s", lambda ws: cli(ws, "trainer.peak_tflops=-1"), 2,
         ["trainer.peak_tflops=-1.0", "must be > 0"]),
    Case("checkpoints every 0 steps", lambda ws: cli(ws, "trainer.checkpoint_every_n_steps=0"), 2,
         ["trainer.checkpoint_every_n_steps=0", "must be >= 1"]),
    Case("bad mitigation value (checked before the model loads)",
         lambda ws: cli(ws, "mitigation=ewc", "mitigation.mode=bogus"), 2,
         ["mitigation.mode='bogus'", "must be 'online' or 'separate'"]),
    Case("own data without its folder", lambda ws: cli(ws, "data=own"), 2,
         ["data=own", "set it to the folder that holds your files"]),
    Case("own files read as the default dataset", lambda ws: cli(ws, f"data.path={ws.toy}"), 2,
         ["override 'data.path={toy}'", "read as data=banking77 (the default)", "Add data=own"]),
    Case("run folder inside a file", lambda ws: cli(ws, f"hydra.run.dir={a_file(ws)}/run"), 2,
         ["hydra.run.dir={root}/a_file/run", "{root}/a_file is a file, not a folder"]),
    Case("sweep folder inside a file", lambda ws: cli(ws, "-m", f"hydra.sweep.dir={a_file(ws)}/sweep", "seed=0,1"), 2,
         ["hydra.sweep.dir={root}/a_file/sweep", "{root}/a_file is a file, not a folder"]),
    Case("a new sweep into a finished sweep's folder", lambda ws: cli(ws, "-m", "seed=3,4", *finished_sweep(ws)), 2,
         ["hydra.sweep.dir={root}/done holds a sweep already", "resume=true"]),
    # data files
    Case("malformed JSONL", lambda ws: train_file_with(ws, '{"text": "broken", "label": '), 1,
         ["{toy}/train.jsonl, line 4: not valid JSON"], RUN),
    Case("missing field", lambda ws: train_file_with(ws, {"label": "top_up"}), 1,
         ["{toy}/train.jsonl, line 4: field 'text' is missing (fields present: label)"], RUN),
    Case("malformed CSV", malformed_csv, 1, ["{toy}/train.csv, line 2: malformed CSV", "never closed"], RUN),
    Case("empty split", empty_test_split, 1, ["the test split is empty ({toy}/test.jsonl holds no records)"], RUN),
    Case("unknown label", lambda ws: train_file_with(ws, {"text": "cancel my card", "label": "cancel_card"},
                                                    "data.labels=[card_arrival,top_up,refund]"), 1,
         ["{toy}/train.jsonl, line 4", "label 'cancel_card' is not one of data.labels"], RUN),
    Case("a single class", single_class, 1, ["has only the label 'top_up'", "{toy}/train.jsonl"], RUN),
    Case("own data: mistyped file", lambda ws: job(ws, *ws.base, "data=own", f"data.path={ws.toy}",
                                                 "data.train_file=trian.jsonl"), 1,
         ["{toy}/trian.jsonl does not exist", "its data files: test.jsonl, train.jsonl"], RUN),
    Case("n_train too large", lambda ws: job(ws, *ws.base, "data.n_train=99999"), 1, ["data.n_train=99999"], RUN),
    Case("training on an evaluation-only dataset", lambda ws: job(ws, *ws.base, "data=truthfulqa"), 1,
         ["data 'truthfulqa' is for evaluation only"], RUN),
    Case("missing data directory", lambda ws: job(ws, *ws.base, f"data_dir={ws.root}/no_such_dir"), 1,
         ["{root}/no_such_dir/banking77/", "does not exist", "FTEXP_DATA_DIR"], RUN),
    Case("missing model path", lambda ws: job(ws, *[o for o in ws.base if o not in TINY], *SHORT,
                                             "model=smollm2_135m", f"model.path={ws.root}/no_model"), 1,
         ["model.path='{root}/no_model' is not a folder"], RUN),
    Case("NaN loss", lambda ws: job(ws, *ws.base, "optim.lr=1e6", "trainer.gradient_clip_val=0"), 1,
         ["stage 'finetune'", "NaN or infinite at step", "(it is 1e+06)"], RUN),
    Case("cache folder inside a file", lambda ws: job(ws, *ws.base, f"cache_dir={a_file(ws)}/cache"), 1,
         ["cannot write to the cache folder {root}/a_file", "FTEXP_CACHE_DIR"], RUN),
    # run folders
    Case("run folder the run cannot write", lambda ws: job(ws, *ws.base, f"output_dir={a_file(ws)}/run"), 1,
         ["cannot write to the run folder {root}/a_file/run", "hydra.run.dir="]),
    Case("output folder holds a completed run", completed_run_in_output_folder, 1,
         ["{root}/run/results.json holds a completed run; refusing to overwrite it"]),
    Case("completed run folder named on the command line", completed_run_folder_from_the_command_line, 1,
         ["{root}/run/results.json holds a completed run; refusing to overwrite it"]),
    Case("output folder holds a results.json cut short", truncated_results, 1,
         ["{root}/run/results.json cannot be read", "overwrite=true"]),
    Case("output folder in use by another run", run_folder_in_use, 1,
         ["{root}/run is in use by another run (process "]),
    Case("resume with another config", resume_with_another_config, 1,
         ["resume=true: {root}/run holds a run of another config", "optim.lr: 0.002 -> 0.5", "seed: 0 -> 5"]),
    Case("missing data directory in a sweep", lambda ws: cli(
        ws, "-m", *[o for o in ws.base if not o.startswith(("output_dir=", "data_dir="))],
        f"data_dir={ws.root}/none_a,{ws.root}/none_b", f"hydra.sweep.dir={ws.root}/sweep_b"), 1,
        ["{root}/none_a/banking77/", "does not exist",  # (the first failure)
         "{root}/sweep_b/0/results.json (status: failed)"], "sweep_b/0/results.json"),
    Case("GPU trainer on a machine without one", gpu_trainer_without_a_gpu, 1,
         ["trainer.accelerator='gpu'", "needs a CUDA GPU", "trainer=cpu"]),
    # review-rating files
    Case("out-of-range rating", lambda ws: ratings_with(ws, "qa/test/3", helpfulness=7), 1,
         ["{root}/ratings.jsonl", "'qa/test/3'", "column 'helpfulness' is 7, not an integer from 1 to 5"],
         own_dir=False),
    Case("unknown review id", lambda ws: ratings_with(ws, "qa/test/3", id="qa/test/999"), 1,
         ["{root}/ratings.jsonl", "'qa/test/999'", "unknown id"], own_dir=False),
    Case("ratings of another run's outputs", lambda ws: ratings_with(ws, "qa/test/3", output="a different answer"), 1,
         ["'qa/test/3'", "column 'output' differs"], own_dir=False),
    # results read back
    Case("half-written results.json", half_written_sweep, 1,
         ["no job of {root}/sweep completed", "0: unreadable", "results.json is not valid JSON"], own_dir=False),
]


# Cases that read the real datasets (FTEXP_DATA_DIR); the others run anywhere.
NEEDS_DATA = {"n_train too large", "training on an evaluation-only dataset", "missing model path", "NaN loss"}


@pytest.fixture
def workspace(request, tmp_path, cache_dir, toy_data, monkeypatch) -> Workspace:
    from tests.helpers import find_data_dir as _data_dir
    from tests.helpers.review import export, fixture_outputs

    case, via = request.node.callspec.params["case"], request.node.callspec.params["via"]
    data_dir = _data_dir()
    if data_dir is None and case.name in NEEDS_DATA:
        pytest.skip("real datasets not found: set FTEXP_DATA_DIR to the folder holding banking77/")
    data_dir = data_dir or tmp_path / "no_data"
    no_hub(monkeypatch)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    review_run = tmp_path / "review_run"
    review_run.mkdir()
    export(review_run, {"qa": fixture_outputs()}, n=50)
    base = [*TINY, "trainer.log_every_n_steps=1", f"data_dir={data_dir}", f"cache_dir={cache_dir}",
            f"output_dir={tmp_path / 'run'}"]
    return Workspace(root=tmp_path, toy=toy_data, review_run=review_run, base=base,
                     configs=own_configs(tmp_path / "own_configs", toy_data), through_configs=via == "config-dir")


def own_configs(folder: Path, toy: Path) -> Path:
    """What a user keeps outside conf/: a data option for their files and two experiment files."""
    for name, text in {
        "data/toy.yaml": f"defaults:\n  - banking77\n  - _self_\nname: toy\npath: {toy}\n",
        "experiment/mine.yaml": "# @package _global_\n# My experiment: tagged, nothing else changed.\ntags: [mine]\n",
        "experiment/widen.yaml": "# @package _global_\nallowed_targets: [builtins.]\n",
    }.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def files(root: Path) -> Dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def outside_echo(message: str) -> str:
    """The message without the overrides it repeats (a phrase found only there proves nothing)."""
    text = re.sub(r" ?\(overrides: [^)]*\)", "", message)
    return "\n".join(line for line in text.splitlines()
                     if not line.startswith(("Error executing job with overrides", "[")))


MATRIX = [pytest.param(case, via, id=f"{case.name} ({via})") for case in CASES
          for via in ("conf", "config-dir") if via == "conf" or case.own_dir]


@pytest.mark.parametrize("case,via", MATRIX)
def test_bad_input_fails_loudly_names_the_culprit_and_changes_nothing(workspace, case, via):
    attempt = case.make(workspace)
    before = files(workspace.root)
    code, message = attempt()
    assert code == case.code, f"{case.name}: exit code {code}, not {case.code}; output: {message[-2000:]}"
    for words in case.words:
        words = words.format(root=workspace.root, toy=workspace.toy)
        text = message if words.startswith("override '") else outside_echo(message)  # naming the override is the point
        assert words in text, f"{case.name}: {words!r} not in {text[-2000:]!r}"
    assert "Traceback" not in message, message
    after = files(workspace.root)
    changed = [str(p) for p, content in before.items() if after.get(p) != content]
    assert not changed, f"{case.name}: files that existed before changed: {changed}"
    assert not (workspace.root / "made").exists(), f"{case.name}: a config ran code"
    new_records = {p: json.loads(p.read_text()) for p in after if p.name == "results.json" and p not in before}
    if case.record:
        record = new_records.get(workspace.root / case.record)
        assert record is not None and record["status"] == "failed", f"{case.name}: no failed record: {new_records}"
        assert not record.get("metrics"), f"{case.name}: a failed record with final metrics"
    else:
        assert not new_records, f"{case.name}: refused, yet wrote {list(new_records)}"


def test_the_matrix_covers_every_kind_of_input():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
