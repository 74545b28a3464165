"""A kill in the middle of a write never leaves a half-written results.json, review file or compare
report that a reader would take as valid: each is written to a temporary file and renamed into place.

Each writer runs in a child process whose ``os.replace`` (the rename that publishes a file) blocks
when it publishes the target under test; the child is killed with SIGKILL there, and that target
must still hold exactly what it held before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

CHILD = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
folder, flag, target = Path({folder!r}), Path({flag!r}), Path({target!r})
real_replace = os.replace

def stalled_replace(src, dst):
    if Path(dst) != target:
        return real_replace(src, dst)
    flag.write_text(str(dst))
    time.sleep(600)

os.replace = stalled_replace
{body}
"""

WRITERS = {
    "results.json": ("from ftexp.tracking.results import write_results\n"
                     "write_results(folder, {'status': 'completed', 'metrics': {'test/accuracy': 0.9}})",
                     ["results.json"]),
    "review export": ("from tests.helpers.review import export, fixture_outputs\n"
                      "export(folder, {'qa': fixture_outputs()}, n=50)",
                      ["review/review.jsonl", "review/review.csv", "review/label_studio_tasks.json"]),
    "compare report": ("from tests.helpers.multirun import results, write_multirun\n"
                       "from ftexp.compare import compare_folder\n"
                       "jobs = [results(['lr=1'], s, {'test/accuracy': 0.5 + s / 10}, ['E2']) for s in range(3)]\n"
                       "compare_folder(write_multirun(folder / 'sweep', jobs, {'seed': '0,1,2'}), out=folder)",
                       ["report.md", "table.csv"]),
}


CASES = [(writer, target) for writer, (_, targets) in WRITERS.items() for target in targets]


@pytest.mark.parametrize("writer, target", CASES, ids=[f"{w}: {t}" for w, t in CASES])
def test_a_kill_mid_write_leaves_the_target_as_it_was(writer, target, tmp_path):
    body, targets = WRITERS[writer]
    folder, flag = tmp_path / "out", tmp_path / "flag"
    for name in targets:  # what a reader sees now, from an earlier write
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"earlier {name}\n")
    old = (folder / target).read_bytes()
    script = CHILD.format(repo=str(REPO), folder=str(folder), flag=str(flag), target=str(folder / target), body=body)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not flag.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    finished = child.poll() is not None
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate()
    assert not finished, f"{writer}: {target} was written without being renamed into place: {err[-2000:]}"
    assert flag.exists(), f"{writer}: the child never reached the rename of {target} in 300 s"
    assert flag.read_text() == str(folder / target)
    assert (folder / target).read_bytes() == old, f"{writer}: {target} changed before its rename"
    leftovers = [p.name for p in folder.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert all(n.startswith(".") for n in leftovers), leftovers  # hidden temporary files only


def test_a_reader_skips_the_temporary_files_a_kill_leaves(tmp_path):
    """What a killed writer leaves (hidden .tmp files) is never read as a job's results."""
    from ftexp.compare.collect import read_multirun
    from ftexp.job import completed_results

    job = tmp_path / "sweep" / "0"
    job.mkdir(parents=True)
    (job / ".results.json.abc.tmp").write_text(json.dumps({"status": "completed", "metrics": {"x": 1.0}}))
    assert completed_results(job) is None
    sweep = read_multirun(tmp_path / "sweep")
    assert [j.status for j in sweep.jobs] == ["unreadable"] and not sweep.completed


def test_an_atomically_written_file_gets_a_normal_file_mode(tmp_path):
    from ftexp.utils.io import atomic_write_text

    (tmp_path / "plain.txt").write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
