"""SLURM and parallel-local sweeps through hydra-submitit-launcher (``conf/hydra/launcher/``).

Real sweeps in a subprocess (slow; the launcher configs themselves are composed and checked in
tests/unit/test_slurm_configs.py): on ``local_parallel`` (submitit_local), and on ``slurm_gpu`` against a
stand-in for ``sbatch``/``srun``/``sacct`` that runs the job array on this machine with the variables SLURM sets,
so that submitit, Hydra, Lightning's SLURM environment and ftexp's ranks meet as they do on a cluster
(CPU and gloo instead of GPUs and NCCL).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import TINY

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs pip install 'ftexp[slurm]'")


def _sweep(args, tmp_path, env_extra=None, timeout=600):
    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "ftexp", "-m", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=timeout)
    return proc


def _small(data_dir, cache_dir, sweep_dir):
    return [
        *TINY, "data.n_train=60", "data.n_test=20", f"data_dir={data_dir}", f"cache_dir={cache_dir}",
        f"hydra.sweep.dir={sweep_dir}"]


def _completed(sweep_dir: Path, n: int):
    results = sorted(sweep_dir.glob("*/results.json"))
    assert [p.parent.name for p in results] == [str(i) for i in range(n)]
    loaded = [json.loads(p.read_text()) for p in results]
    assert [r["status"] for r in loaded] == ["completed"] * n
    assert sorted(r["seed"] for r in loaded) == list(range(n))
    return loaded


def _logs(sweep_dir: Path, which: str):
    return sorted((sweep_dir / ".submitit").glob(f"*/*_{which}_log.out"))


@pytest.mark.slow
def test_local_parallel_sweep_runs_each_job_in_its_own_process(data_dir, cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _sweep(["hydra/launcher=local_parallel", *_small(data_dir, cache_dir, sweep), "seed=0,1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _completed(sweep, 2)
    logs = _logs(sweep, "0")
    assert len(logs) == 2  # one submitit job (process) per sweep job
    assert all("ftexp: completed" in p.read_text() for p in logs)


# A stand-in for SLURM's sbatch/srun/sacct/scancel (one script, dispatched on its name). sbatch reads
# the #SBATCH lines that submitit wrote and starts each array task in the background with the job's
# SLURM_* variables; srun starts ntasks copies of its command with SLURM_PROCID/SLURM_LOCALID and
# writes each task's output where --output/--error say (%A %a %j %t expanded); sacct reports the
# states sbatch's runners leave behind. One node only. MASTER_PORT is a free port per job (SLURM
# leaves it unset and Lightning derives it from the job id) so concurrent test sessions cannot clash.
FAKE_SLURM = r'''
import os, re, socket, subprocess, sys, random
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATE = HERE / "state"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sbatch(script):
    text = Path(script).read_text()
    opts = {k: v for k, v in re.findall(r"^#SBATCH --([\w-]+)(?:=(\S*))?", text, re.M)}
    STATE.mkdir(exist_ok=True)
    base = random.randrange(100000, 999000, 100)
    nodes, per_node = int(opts.get("nodes", 1)), int(opts.get("ntasks-per-node", 1))
    assert nodes == 1, "the stand-in runs one node"
    m = re.match(r"(\d+)-(\d+)", opts.get("array", ""))
    for a in (range(int(m.group(1)), int(m.group(2)) + 1) if m else [None]):
        name = str(base) if a is None else f"{base}_{a}"
        env = dict(os.environ, SLURM_JOB_ID=str(base if a is None else base + 1 + a),
                   SLURM_JOB_NAME=opts.get("job-name", "sbatch"), SLURM_NNODES=str(nodes),
                   SLURM_JOB_NUM_NODES=str(nodes), SLURM_NTASKS=str(nodes * per_node),
                   SLURM_NTASKS_PER_NODE=str(per_node), SLURM_CPUS_PER_TASK=opts.get("cpus-per-task", "1"),
                   SLURM_NODELIST="localhost", SLURM_JOB_NODELIST="localhost", SLURM_SUBMIT_DIR=os.getcwd(),
                   MASTER_PORT=str(free_port()))
        if a is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(base), SLURM_ARRAY_TASK_ID=str(a))
        (STATE / name).write_text("RUNNING")
        subprocess.Popen([sys.executable, __file__, "_run", script, name], env=env, start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {base}")


def run(script, name):
    rc = subprocess.call(["bash", script])
    (STATE / name).write_text("COMPLETED" if rc == 0 else "FAILED")


def srun(args):
    out = err = None
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag in ("--output", "--error"):
            value = args.pop(0)
            out, err = (value, err) if flag == "--output" else (out, value)
    ntasks, per_node = int(os.environ["SLURM_NTASKS"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
    ids = {"%A": os.environ.get("SLURM_ARRAY_JOB_ID", ""), "%a": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
           "%j": os.environ["SLURM_JOB_ID"]}
    procs = []
    for t in range(ntasks):
        def path(p):
            for k, v in {**ids, "%t": str(t)}.items():
                p = p.replace(k, v)
            return open(p, "a")
        env = dict(os.environ, SLURM_PROCID=str(t), SLURM_LOCALID=str(t % per_node), SLURM_NODEID=str(t // per_node),
                   SLURM_STEP_ID="0")
        procs.append(subprocess.Popen(args, env=env, stdout=path(out) if out else None,
                                      stderr=path(err) if err else None))
    sys.exit(max(p.wait() for p in procs))


def sacct(args):
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for f in sorted(STATE.glob("*")) if STATE.exists() else []:
        if f.name.split("_")[0] in ids:
            print(f"{f.name}|{f.read_text()}|localhost")


if __name__ == "__main__":
    tool, args = Path(sys.argv[0]).name, sys.argv[1:]
    if args[:1] == ["_run"]:
        run(*args[1:])
    elif tool == "sbatch":
        sbatch(args[-1])
    elif tool == "srun":
        srun(args)
    elif tool == "sacct":
        sacct(args)
'''


@pytest.fixture
def fake_slurm(tmp_path) -> Path:
    bin_dir = tmp_path / "fake-slurm"
    bin_dir.mkdir()
    script = bin_dir / "fake_slurm.py"
    script.write_text(f"#!{sys.executable}\n{FAKE_SLURM}")
    script.chmod(0o755)
    for tool in ("sbatch", "srun", "sacct"):
        (bin_dir / tool).symlink_to(script)
    (bin_dir / "scancel").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "scancel").chmod(0o755)
    return bin_dir


@pytest.mark.slow
def test_slurm_sweep_one_ddp_rank_per_task(data_dir, cache_dir, tmp_path, fake_slurm):
    """slurm_gpu with 2 tasks per node (CPU ranks standing in for GPUs): each job of the sweep is one
    array task whose 2 srun tasks run the Hydra job; Lightning takes them as DDP ranks 0 and 1 of 2
    (it launches nothing itself), and rank 0 writes results.json."""
    sweep = tmp_path / "sweep"
    args = ["hydra/launcher=slurm_gpu", "hydra.launcher.gpus_per_node=null", "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.cpus_per_task=1", "trainer.strategy=ddp", "trainer.devices=2",
            *_small(data_dir, cache_dir, sweep), "seed=0,1"]
    proc = _sweep(args, tmp_path, env_extra={"PATH": f"{fake_slurm}{os.pathsep}{os.environ['PATH']}"})
    states = fake_slurm / "state"
    deadline = time.monotonic() + 60  # submitit returns on the result files; let the job scripts exit too
    while any(f.read_text() == "RUNNING" for f in states.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stderr[-3000:] + "".join(p.read_text()[-2000:] for p in
                                                                 sweep.glob(".submitit/*/*_log.*"))
    assert sorted(f.read_text() for f in states.glob("*")) == ["COMPLETED", "COMPLETED"]
    _completed(sweep, 2)

    submission = next(sweep.glob(".submitit/*/*_submission.sh")).read_text()
    for line in ("#SBATCH --ntasks-per-node=2", "#SBATCH --nodes=1", "#SBATCH --job-name=ftexp",
                 "#SBATCH --array=0-1%2", "#SBATCH --cpus-per-task=1", "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK"):
        assert line in submission
    assert re.search(r"^srun .*submitit\.core\._submit", submission, re.M)

    for rank in (0, 1):
        logs = _logs(sweep, str(rank))
        assert len(logs) == 2, f"rank {rank}: one log per job expected, got {logs}"
        for log in logs:
            assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log.read_text(), log.read_text()[-3000:]
    assert all("ftexp: completed" in p.read_text() for p in _logs(sweep, "0"))
    assert not any("ftexp: completed" in p.read_text() for p in _logs(sweep, "1"))  # rank 1 reports nothing
