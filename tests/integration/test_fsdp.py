"""trainer=fsdp. Lightning runs FSDP on GPUs only, so on a CPU the config, its refusals and the
strategy it builds are checked; the step ftexp adds after a sharded stage (gather the weights, unwrap
the FSDP units) and the clipping run under torch's FSDP itself on two gloo processes; and a whole run
goes through Lightning's FSDP strategy on two CPU processes (tests/helpers/fsdp_on_cpu.py lifts the refusal)."""

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

from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from tests.helpers import TINY, checkout_env, script


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1))


class Holder(nn.Module):  # stands for the LightningModule that holds the model as .model
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **batch):
        return self.model(**batch)


def sgd_step(module: nn.Module, data: torch.Tensor) -> None:
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.5)
    module(input_ids=data, labels=data).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_trainer_fsdp_composes_and_builds_one_unit_per_decoder_layer():
    from pytorch_lightning.strategies import FSDPStrategy
    from torch.distributed.fsdp import ShardingStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from ftexp.training.fsdp import layer_classes, strategy

    cfg = compose_config(["trainer=fsdp", "trainer.fsdp.activation_checkpointing=true",
                          "trainer.fsdp.sharding_strategy=SHARD_GRAD_OP"])
    check_overrides(["trainer=fsdp", "model=llama3_8b", "peft=full"])
    built = strategy(cfg.trainer.fsdp, tiny_llama(), cfg.trainer.precision)
    assert cfg.trainer.precision == "bf16-mixed"  # bf16 compute; buffers (RoPE) and gradient reduction fp32
    mp = built.mixed_precision_config
    assert (mp.param_dtype, mp.reduce_dtype, mp.buffer_dtype) == (torch.bfloat16, torch.float32, torch.float32)
    assert strategy(cfg.trainer.fsdp, tiny_llama(), "32-true").mixed_precision is None  # Lightning's own
    assert isinstance(built, FSDPStrategy) and built.sharding_strategy == ShardingStrategy.SHARD_GRAD_OP
    assert built.kwargs["use_orig_params"] is True  # LoRA mixes frozen and trainable parameters
    assert built.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert built._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert built.cpu_offload.offload_params is False
    offloaded = strategy(compose_config(["trainer=fsdp", "trainer.fsdp.cpu_offload=true"]).trainer.fsdp, tiny_llama(),
                         "bf16-mixed")
    assert offloaded.cpu_offload.offload_params is True and offloaded._activation_checkpointing_kwargs == {}
    assert layer_classes(Holder(tiny_llama())) == {LlamaDecoderLayer}
    with pytest.raises(ValueError, match="names no layer class"):
        layer_classes(nn.Linear(2, 2))


@pytest.mark.parametrize("overrides, words", [
    (["trainer=fsdp", "trainer.accelerator=cpu"], "runs on GPUs only"),
    (["trainer=fsdp", "mitigation=ewc"], "mitigation='ewc': EWC's penalty and LwF's teacher need every"),
    (["trainer=fsdp", "mitigation=lwf"], "mitigation='lwf'"),
    (["trainer=fsdp", "trainer.early_stopping_patience=2"], "not supported with trainer=fsdp"),
    (["trainer=fsdp", "trainer.fsdp.sharding_strategy=FULL"], "must be FULL_SHARD, SHARD_GRAD_OP"),
    (["trainer=fsdp", "trainer.compile=true"], "trainer.compile=True: torch.compile cannot trace into"),
])
def test_what_fsdp_cannot_do_is_refused_at_composition(overrides, words):
    with pytest.raises(ConfigError, match=words):
        check_overrides(overrides)


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


def test_weight_decay_follows_the_shapes_before_sharding():
    """FSDP hands configure_optimizers 1-D shards named with wrapper prefixes; weight decay must still
    go to the matrices, as without sharding."""
    from types import SimpleNamespace

    from ftexp.training.module import FineTuneModule

    cfg = compose_config([])
    module = FineTuneModule(tiny_llama(), cfg.optim, lr=1e-3)
    def decayed():
        trainer = SimpleNamespace(estimated_stepping_batches=10, precision="32-true", gradient_clip_val=1.0)
        view = SimpleNamespace(model=module.model, optim_cfg=cfg.optim, lr=1e-3, _ndim=module._ndim,
                               master_weights=False, trainer=trainer)
        return {id(p) for p in FineTuneModule.configure_optimizers(view)["optimizer"].param_groups[0]["params"]}

    plain = decayed()
    layer = module.model.model.layers[0]
    module.model.model.layers[0] = nn.Module()
    module.model.model.layers[0]._fsdp_wrapped_module = layer  # the name FSDP gives it
    for p in module.model.parameters():
        p.data = p.data.flatten()  # what a shard looks like
    sharded = decayed()
    assert plain and sharded == plain


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
