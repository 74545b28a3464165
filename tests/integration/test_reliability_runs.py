"""Runs in fresh processes: two give byte-identical metrics, and SIGTERM (to the process group or to one
DDP rank) stops every rank at the same point, exits non-zero and keeps the checkpoint for a resume."""

from __future__ import annotations

import json

import pytest

from tests.helpers import TIMING, TINY, script


@pytest.mark.slow
def test_two_fresh_processes_give_byte_identical_metrics(data_dir, cache_dir, tmp_path):
    """Same config and seed on CPU: the evaluation rows and every metric that is not a measured
    duration are byte-identical across two fresh processes; the seeds used are recorded."""
    import os
    import subprocess
    import sys

    sections = []
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "-m", "ftexp", *TINY, f"data_dir={data_dir}", f"cache_dir={cache_dir}",
                               "save_model=false", "data.synthetic.share=0.3", "data.synthetic.method=augment",
                               f"hydra.run.dir={tmp_path / name}"], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONHASHSEED": "random"})
        assert done.returncode == 0, done.stderr[-3000:]
        res = json.loads((tmp_path / name / "results.json").read_text())
        metrics = {k: v for k, v in res["metrics"].items() if not any(t in k for t in TIMING)}
        sections.append((json.dumps(res["rows"], sort_keys=True), json.dumps(metrics, sort_keys=True),
                         json.dumps(res["stages"][0]["train/loss"]), res["seeds"]))
    assert sections[0] == sections[1]
    assert sections[0][3]["seed"] == 0 and sections[0][3]["batch_order"] == {"finetune": 1}


def _finish_or_fail(proc, timeout: int, what: str):
    """A job started in its own process group: its (stdout, stderr), or, if it hangs, every rank
    killed and the test failed (a rank left blocked in a collective would outlive the test)."""
    import os
    import signal
    import subprocess

    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"the job hung after {what}:\n{err[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["cpu", "ddp_cpu"])
def test_a_run_stopped_by_sigterm_exits_non_zero_and_says_how_to_resume(data_dir, cache_dir, tmp_path, trainer):
    """Lightning turns SIGTERM into an exit with no code (0); a stopped run must not look finished. The
    signal goes to the whole process group, as a scheduler sends it: under DDP every rank stops, and
    one message says so."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ftexp", *TINY, f"data_dir={data_dir}", f"cache_dir={cache_dir}",
                             "trainer.max_epochs=50", "save_model=false", f"hydra.run.dir={run_dir}",
                             f"trainer={trainer}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    marker = run_dir / "checkpoints" / "stage1" / "last.ckpt"  # training is under way
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = _finish_or_fail(proc, 300, "SIGTERM to the process group")
    assert proc.returncode == 143, err[-3000:]
    assert err.count("stopped by SIGTERM; resume=true") == 1 and "Traceback" not in err, err[-3000:]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "failed" and res["metrics"] == {} and marker.exists()  # kept for the resume


@pytest.mark.slow
@pytest.mark.parametrize("at", ["0:2", "1:2", "1:val"])
def test_sigterm_to_one_ddp_rank_stops_every_rank_at_the_same_point(data_dir, cache_dir, tmp_path, at):
    """One rank gets SIGTERM in the middle of training batch 2 (before the step's collectives) or of
    the last validation. Lightning's handler broadcast from inside the signal handler and checked the
    flag per rank: the job hung. Here every rank stops after that batch, or after that validation
    (which a check after training batches alone would miss: the run went on to evaluate), and the run
    exits 143 with its last checkpoint kept."""
    import os
    import subprocess
    import sys

    import torch

    run_dir = tmp_path / "run"
    epochs = 1 if at.endswith("val") else 3
    args = [*TINY, f"data_dir={data_dir}", f"cache_dir={cache_dir}", "trainer=ddp_cpu", f"trainer.max_epochs={epochs}",
            "trainer.checkpoint_every_n_steps=1", "save_model=false", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, str(script("sigterm_at_batch")), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "FTEXP_SIGTERM_AT": at})
    out, err = _finish_or_fail(proc, 240, f"SIGTERM to rank {at}")
    assert proc.returncode == 143, err[-3000:]
    assert err.count("stopped by SIGTERM; resume=true") == 1 and "Traceback" not in err
    assert f"[rank {at[0]}] received SIGTERM" in err + out
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "failed" and res["error"]["type"] == "SIGTERMException"
    saved = torch.load(run_dir / "checkpoints" / "stage1" / "last.ckpt", map_location="cpu", weights_only=False)
    if at.endswith(":2"):
        assert saved["global_step"] == 2  # batches 0 and 1 checkpointed; batch 2 stopped the run before its own
