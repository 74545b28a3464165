"""The stage cache: a preparatory stage trained once per sweep, reused bit for bit by later jobs."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import torch

from ftexp.config.preflight import compose_config
from ftexp.training.stage_cache import device_count, rng_state, set_rng_state, stage_entry, stage_key


def _key(model, rows=None, settings=None):
    return stage_key(model, rows or {"train": [{"input_ids": [1, 2], "labels": [1, 2]}]}, settings or {"lr": 0.1})


def test_the_key_changes_with_every_input_of_the_stage():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    state = torch.get_rng_state()
    base = _key(model)
    assert _key(model) == base  # and hashing does not draw random numbers
    assert torch.equal(torch.get_rng_state(), state)
    assert _key(model, rows={"train": [{"input_ids": [1, 3], "labels": [1, 3]}]}) != base
    assert _key(model, settings={"lr": 0.2}) != base
    torch.rand(1)  # dropout in the stage would draw different numbers
    assert _key(model) != base
    torch.set_rng_state(state)
    with torch.no_grad():
        model.weight[0, 0] += 1e-7  # different starting weights: an earlier stage or another init
    assert _key(model) != base


def test_random_states_round_trip():
    import random

    import numpy as np

    saved = rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(5), random.random(), np.random.rand(2)
    set_rng_state(saved)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def _claim(root: str, log: str) -> None:
    """One job: train (sleep, then store) unless the entry is already there."""
    model = torch.nn.Linear(2, 2)
    with stage_entry(Path(root), "k") as entry:
        if entry.hit:
            entry.restore(model)
            outcome = "reused"
        else:
            time.sleep(0.5)
            entry.store(model, {"steps": 3})
            outcome = "trained"
    with open(log, "a") as f:
        f.write(outcome + "\n")


def test_random_states_round_trip_through_lightning_s_lazy_checkpoint_loader(tmp_path):
    """Lightning's FSDP strategy resumes from a full checkpoint through its lazy loader, which reads only
    dtypes that have a typed storage class (numpy's uint32 state has none; it failed there)."""
    import random

    import numpy as np
    from lightning_fabric.utilities.load import _lazy_load, _materialize_tensors

    torch.save({"ftexp_rng": rng_state()}, tmp_path / "last.ckpt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    loaded = _lazy_load(tmp_path / "last.ckpt")
    set_rng_state({k: _materialize_tensors(v) for k, v in loaded["ftexp_rng"].items()})
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_parallel_jobs_train_a_shared_stage_once(tmp_path):
    log = tmp_path / "log"
    ctx = mp.get_context("spawn")
    jobs = [ctx.Process(target=_claim, args=(str(tmp_path / "cache"), str(log))) for _ in range(3)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(60)
    assert all(j.exitcode == 0 for j in jobs)
    assert sorted(log.read_text().split()) == ["reused", "reused", "trained"]


def test_device_count_reads_the_trainer_settings():
    from types import SimpleNamespace as NS

    assert device_count(NS(devices=1, num_nodes=1, accelerator="cpu")) == 1
    assert device_count(NS(devices=2, num_nodes=2, accelerator="cpu")) == 4
    assert device_count(NS(devices=[0, 1], num_nodes=1, accelerator="gpu")) == 2
    assert device_count(NS(devices="0,1,2", num_nodes=1, accelerator="gpu")) == 3
    assert device_count(NS(devices="auto", num_nodes=1, accelerator="cpu")) == 1


SMALL = ["experiment=forgetting", "data.n_train=154", "data.n_test=40", "tasks.cuad.n_train=152",
         "tasks.cuad.n_test=40", "tasks.general.n_train=20", "tasks.general.n_test=5", "save_model=false"]


def _run(overrides, tmp_path, name):
    from ftexp.job import run_job

    cfg = compose_config([*overrides, f"output_dir={tmp_path / name}"])
    run_job(cfg)
    return json.loads((tmp_path / name / "results.json").read_text())


def test_a_reused_first_stage_gives_the_results_of_a_fresh_run(tiny_overrides, tmp_path, monkeypatch):
    """E3's arms share stage 1: EWC trains and stores it, a later `none` job loads it, and that job's
    every number equals a `none` job that trained everything itself. EWC takes its Fisher after stage 1
    only: the run tells it which stage is the last."""
    from ftexp.mitigation import ewc as ewc_module

    fishers = []
    real_fisher = ewc_module.per_sample_fisher
    monkeypatch.setattr(ewc_module, "per_sample_fisher", lambda *a, **k: fishers.append(1) or real_fisher(*a, **k))
    base = [*tiny_overrides, *SMALL, f"cache_dir={tmp_path / 'cache'}"]
    fresh = _run([*base, "mitigation=none", "cache_stages=false"], tmp_path, "fresh")
    ewc = _run([*base, "mitigation=ewc", "mitigation.fisher_samples=32", "mitigation.fisher_batch_size=8"],
               tmp_path, "ewc")
    reused = _run([*base, "mitigation=none"], tmp_path, "reused")

    assert "cache" not in fresh["stages"][0]
    assert ewc["stages"][0]["cache"]["reused"] is False and reused["stages"][0]["cache"]["reused"] is True
    assert "cache" not in reused["stages"][1]  # the last stage is the job's own
    assert reused["rows"] == fresh["rows"]  # bit-equal, stage 2 included
    assert reused["continual"]["R"] == fresh["continual"]["R"]
    assert reused["stages"][1]["train/loss"] == fresh["stages"][1]["train/loss"]
    assert len(list((tmp_path / "cache" / "stages").glob("*/state.pt"))) == 1
    assert len(fishers) == 1  # after stage 1 of 2
