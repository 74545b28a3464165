"""trainer=fsdp on CPU processes. Lightning runs FSDP on GPUs only (the config, its refusals and the strategy
it builds are checked in tests/unit/test_fsdp_config.py); here the step ftexp adds after a sharded stage
(gather the weights, unwrap the FSDP units) and the clipping run under torch's FSDP itself on two gloo
processes, and a whole run goes through Lightning's FSDP strategy on two CPU processes
(tests/helpers/fsdp_on_cpu.py lifts the refusal)."""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from ftexp.config.preflight import compose_config
from tests.helpers import TINY, checkout_env, script
from tests.helpers.models import Holder, tiny_llama


def sgd_step(module: nn.Module, data: torch.Tensor) -> None:
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.5)
    module(input_ids=data, labels=data).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, MixedPrecision
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from ftexp.training.fsdp import layer_classes, saved_buffers, unshard_in_place

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        holder = Holder(tiny_llama())
        holder.model.model.embed_tokens.weight.requires_grad_(False)  # a frozen parameter, as under LoRA
        reference = copy.deepcopy(holder)
        batch = torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(1))
        policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layer_classes(holder))
        report = {}
        for stage in (1, 2):  # two stages: the unsharded model is sharded again by the next one
            buffers = saved_buffers(holder)
            root = FSDP(holder, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu"),
                        mixed_precision=MixedPrecision(buffer_dtype=torch.bfloat16))  # casts the buffers
            units = [m for m in root.modules() if isinstance(m, FSDP)]
            report[f"units_{stage}"] = len(units)
            report[f"handles_{stage}"] = all(u._handle is not None for u in units)
            sgd_step(root, batch[2 * rank:2 * rank + 2])  # each rank its half; FSDP averages the gradients
            sgd_step(reference, batch)  # one process, the whole batch
            unshard_in_place(root, holder, buffers)
        report["fsdp_left"] = [type(m).__name__ for m in holder.modules() if isinstance(m, FSDP)]
        report["fsdp_marks"] = [n for n, p in holder.named_parameters() if any(a.startswith("_fsdp") for a in vars(p))]
        report["max_diff"] = max(float((a - b).detach().abs().max())
                                 for a, b in zip(holder.parameters(), reference.parameters()))
        report["shapes_ok"] = all(a.shape == b.shape for a, b in zip(holder.parameters(), reference.parameters()))
        report["frozen"] = [n for n, p in holder.named_parameters() if not p.requires_grad]
        report["buffers"] = {n: [str(b.dtype), bool(torch.equal(b, dict(reference.named_buffers())[n]))]
                             for n, b in holder.named_buffers()}
        logits = holder.model(input_ids=batch).logits
        report["logits_diff"] = float((logits - reference.model(input_ids=batch).logits).detach().abs().max())
        json.dump(report, open(f"{out}/rank{rank}.json", "w"))
    finally:
        dist.destroy_process_group()


def _clip_rank(rank: int, port: int, out: str) -> None:
    """Gradients of one batch, half per rank, clipped through the module's configure_gradient_clipping
    under FSDP; written out whole with those of one process on the whole batch, clipped by torch."""
    from types import SimpleNamespace

    import torch.distributed as dist
    from pytorch_lightning.plugins.precision import FSDPPrecision
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from ftexp.training.fsdp import layer_classes
    from ftexp.training.module import FineTuneModule

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        module = FineTuneModule(tiny_llama(), compose_config([]).optim, lr=1e-3)
        reference = tiny_llama()
        batch = torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(1))
        policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layer_classes(module))
        root = FSDP(module, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu"))
        half = batch[2 * rank:2 * rank + 2]
        root(input_ids=half, labels=half).loss.backward()  # FSDP averages the ranks' gradients
        module._trainer = SimpleNamespace(strategy=SimpleNamespace(model=root),
                                          precision_plugin=FSDPPrecision("32-true"), gradient_clip_val=0.01,
                                          gradient_clip_algorithm="norm")
        module.configure_gradient_clipping(torch.optim.SGD(root.parameters(), lr=1.0), 0.01, "norm")
        with FSDP.summon_full_params(root, with_grads=True):
            clipped = [p.grad.clone() for p in module.model.parameters()]
        reference(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.01)
        torch.save({"fsdp": clipped, "one": [p.grad for p in reference.parameters()]}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gradients_are_clipped_by_their_norm_over_every_shard(tmp_path):
    """Lightning's FSDP refuses to clip by norm (a rank's shards alone give the wrong norm); ftexp clips
    through the root FSDP module: the gradients of two sharded ranks, clipped, equal one process's."""
    import torch.multiprocessing as mp

    mp.spawn(_clip_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        total = torch.norm(torch.stack([g.norm() for g in got["fsdp"]]))
        assert abs(float(total) - 0.01) < 1e-6
        assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(got["fsdp"], got["one"]))


@pytest.mark.slow
def test_after_a_sharded_step_the_model_is_whole_plain_and_equal_to_one_process(tmp_path):
    """Two stages on two gloo ranks: each shards the model (one unit per decoder layer, a frozen
    embedding, buffers cast to bf16), trains one SGD step on halves of a batch and unshards it. The
    second stage shards the unsharded model again; at the end each rank holds a plain model with
    the weights, buffers and logits of one process trained on the whole batch."""
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["units_1"] == got["units_2"] == 3 and got["handles_1"] and got["handles_2"], got  # sharded again
        assert got["fsdp_left"] == [] and got["fsdp_marks"] == [] and got["shapes_ok"]
        assert got["frozen"] == ["model.model.embed_tokens.weight"]
        assert got["max_diff"] < 1e-5 and got["logits_diff"] < 1e-4, got
        assert got["buffers"] and all(v == ["torch.float32", True] for v in got["buffers"].values()), got


# A whole ftexp run with trainer=fsdp on two CPU processes (tests/helpers/fsdp_on_cpu.py lifts the GPU-only refusal).
FSDP_ON_CPU = [sys.executable, str(script("fsdp_on_cpu"))]
TWO_CPUS = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
CLI_ENV = checkout_env()


def run_cli(command, cwd):
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=cwd, env=CLI_ENV)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["peft=lora", "peft.dropout=0", "trainer.fsdp.activation_checkpointing=true"]])
def test_a_fsdp_run_on_two_cpu_processes_matches_one_process(data_dir, cache_dir, tmp_path, extra):
    """The whole of ftexp's trainer=fsdp path, through Lightning's FSDP strategy (made to run on CPU
    processes by tests/helpers/fsdp_on_cpu.py): sharded training with gradient clipping (of a full fine-tune, or
    of LoRA's adapters among frozen weights, no dropout, each layer's activations recomputed), the weights
    gathered after the stage, evaluation. The same losses and accuracy as one process, up to
    summation order."""
    common = [*TINY, "trainer.max_epochs=2", "save_model=false", f"data_dir={data_dir}",
              f"cache_dir={cache_dir}", *[e for e in extra if e.startswith("peft")]]
    runs = {"one": [sys.executable, "-m", "ftexp", *common, "trainer=cpu"],
            "fsdp": [*FSDP_ON_CPU, *common, *TWO_CPUS, *[e for e in extra if e.startswith("trainer.")]]}
    out = {}
    for name, command in runs.items():
        run_cli([*command, f"output_dir={tmp_path / name}", f"hydra.run.dir={tmp_path / name}"], tmp_path)
        out[name] = json.loads((tmp_path / name / "results.json").read_text())
    one, fsdp = out["one"]["stages"][0], out["fsdp"]["stages"][0]
    assert fsdp["world_size"] == 2 and fsdp["steps"] == one["steps"]
    for key in ("train/loss", "val/loss"):
        assert math.isclose(fsdp[key], one[key], rel_tol=1e-4), (key, fsdp[key], one[key])
    assert out["fsdp"]["metrics"]["test/accuracy"] == out["one"]["metrics"]["test/accuracy"]


@pytest.mark.slow
def test_a_fsdp_run_killed_mid_stage_and_resumed_equals_an_uninterrupted_one(data_dir, cache_dir, tmp_path):
    """trainer=fsdp on two CPU processes (tests/helpers/fsdp_on_cpu.py), SIGKILLed once its first epoch's
    checkpoint is written, resumed: Lightning's FSDP strategy saves the full checkpoint and loads it
    into the shards; the run ends with the evaluations of one that was never interrupted, bit for bit."""
    args = [
        *TINY, "trainer.max_epochs=3", "save_model=false", "cache_stages=false", f"data_dir={data_dir}",
        f"cache_dir={cache_dir}", *TWO_CPUS]

    def command(run_dir, *extra):
        return [*FSDP_ON_CPU, *args, f"output_dir={run_dir}", f"hydra.run.dir={run_dir}", *extra]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_cli(command(whole), tmp_path)
    proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=CLI_ENV, cwd=tmp_path)
    marker = killed / "checkpoints" / "stage1" / "last.ckpt"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists() and proc.poll() is None, "the run ended before its first checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # both ranks: the launcher's child is in the same session
    proc.wait()
    run_cli(command(killed, "resume=true"), tmp_path)
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, killed))
    assert b["status"] == "completed" and b["resumed"]["stage1"].endswith("stage1/last.ckpt")
    assert b["rows"] == a["rows"]
    assert [s["val/loss"] for s in b["stages"]] == [s["val/loss"] for s in a["stages"]]
