"""trainer=fsdp, checked on a CPU without running it (Lightning runs FSDP on GPUs only): the config composes
and builds the strategy (one unit per decoder layer), what FSDP cannot do is refused at composition, and
weight decay follows the shapes before sharding. Sharded steps and runs on CPU processes:
tests/integration/test_fsdp.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from tests.helpers.models import Holder, tiny_llama


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
