"""resume=true after a SIGKILL in the middle of training ends with the numbers of a run that was
never interrupted (bit-equal on CPU), through the stage checkpoint and Lightning's (slow tier)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import TINY, script

pytestmark = pytest.mark.slow

# Two stages (Banking77, then CUAD) with EWC: the Fisher and anchors made after stage 1 must
# survive the kill; stage 2 runs three epochs and is killed after its first.
SMALL = [
    *TINY, "logger=none", "experiment=forgetting", "mitigation=ewc", "mitigation.fisher_samples=32",
    "mitigation.fisher_batch_size=8", "data.n_train=154", "data.n_test=40", "tasks.cuad.n_train=152",
    "tasks.cuad.n_test=40", "tasks.general.n_train=20", "tasks.general.n_test=5", "trainer.max_epochs=3",
    "save_model=false", "cache_stages=false"]


def command(data_dir, cache_dir, run_dir, *extra):
    return [sys.executable, "-m", "ftexp", *SMALL, f"data_dir={data_dir}", f"cache_dir={cache_dir}",
            f"hydra.run.dir={run_dir}", *extra]


def run(args):
    done = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("extra", [[], ["trainer=ddp_cpu", "peft=lora", "peft.dropout=0.1"]], ids=["one", "ddp"])
def test_killed_mid_stage_and_resumed_equals_uninterrupted(data_dir, cache_dir, tmp_path, extra):
    """ddp: two ranks whose random states part ways (LoRA dropout on each rank's own rows, rank 0
    alone evaluates): each must resume from its own."""
    whole = tmp_path / "whole"
    run(command(data_dir, cache_dir, whole, *extra))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(data_dir, cache_dir, killed, *extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    marker = killed / "checkpoints" / "stage2" / "last.ckpt"  # stage 2's first epoch is done
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists() and proc.poll() is None, "the run ended before stage 2 had a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoints" / "stage1.pt").is_file()
    status = json.loads((killed / "results.json").read_text())["status"] if (killed / "results.json").exists() else None
    assert status != "completed"

    again = run(command(data_dir, cache_dir, killed, *extra, "resume=true"))
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, killed))
    assert b["status"] == "completed" and b["resumed"]["after_stage"] == 1
    assert b["resumed"]["stage2"].endswith("stage2/last.ckpt")
    assert b["rows"] == a["rows"]  # every evaluation of every row, bit for bit
    assert b["continual"]["R"] == a["continual"]["R"]
    assert [s["val/loss"] for s in b["stages"]] == [s["val/loss"] for s in a["stages"]]
    assert [s["steps"] for s in b["stages"]] == [s["steps"] for s in a["stages"]]
    assert not (killed / "checkpoints").exists() and not (whole / "checkpoints").exists()  # removed when done
    assert "resume" in again.stderr + again.stdout


def test_killed_inside_an_epoch_and_resumed_equals_uninterrupted(data_dir, cache_dir, tmp_path):
    """trainer.checkpoint_every_n_steps: killed right after stage 2's first checkpoint, two optimiser
    steps (four micro-batches) into its first epoch of five batches and inside a train/loss window; the
    resumed epoch skips the batches it had done, draws the random numbers an uninterrupted run would,
    and the stage ends as an uninterrupted one."""
    extra = ["trainer.checkpoint_every_n_steps=2", "trainer.accumulate_grad_batches=2", "trainer.log_every_n_steps=3",
             "peft=lora", "peft.dropout=0.1"]  # dropout: the random state must pick up where it was
    whole = tmp_path / "whole"
    run(command(data_dir, cache_dir, whole, *extra))

    killed = tmp_path / "killed"
    args = command(data_dir, cache_dir, killed, *extra)
    died = subprocess.run([sys.executable, str(script("kill_at_checkpoint")), *args[3:]],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "FTEXP_KILL_STAGE": "2"})
    assert died.returncode == 137, died.stderr[-3000:]
    import torch

    saved = torch.load(killed / "checkpoints" / "stage2" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 2 and saved["FineTuneDataModule"] == {"epoch": 0, "batches_done": 4}

    run(command(data_dir, cache_dir, killed, *extra, "resume=true"))
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, killed))
    assert b["status"] == "completed" and b["resumed"]["stage2"].endswith("stage2/last.ckpt")
    assert b["rows"] == a["rows"]  # every evaluation of every row, bit for bit
    for key in ("steps", "train/loss", "val/loss", "tokens", "effective_tokens"):
        assert [s[key] for s in b["stages"]] == [s[key] for s in a["stages"]], key
