"""Fully sharded data parallel (``trainer=fsdp``) through Lightning's FSDPStrategy.

Training is sharded: each decoder layer (the classes the model lists in ``_no_split_modules``) is one
FSDP unit, so parameters, gradients and optimizer state are split over the ranks. What follows a
stage in ftexp (its evaluation row, the mitigation's ``after_stage``, the next stage's Trainer,
saving) expects a plain model, so after ``fit`` the full weights are gathered on every rank and the
FSDP units are replaced by the modules they wrap (:func:`unshard_in_place`). Evaluation therefore
needs the *weights* of the model to fit one device; FSDP's saving is in the optimizer state and the
gradients (a full fine-tune with AdamW needs about 16 bytes per parameter while training, 2 for
bf16 weights at evaluation).
"""

from __future__ import annotations

from typing import Any, Dict, Set, Type

import pytorch_lightning as pl
import torch
from torch import nn


def layer_classes(model: nn.Module) -> Set[Type[nn.Module]]:
    """The module classes that become FSDP units: the model's own no-split list (its decoder layers)."""
    names = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or ())
    found = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not found:
        raise ValueError(f"trainer.strategy=fsdp: {type(model).__name__} names no layer class to shard by "
                         "(its _no_split_modules is empty); use trainer=ddp")
    return found


def strategy(fsdp_cfg: Any, model: nn.Module):
    """Lightning's FSDPStrategy for ``model``: one unit per decoder layer, original parameters kept
    (LoRA mixes frozen and trainable ones), full state dicts in checkpoints."""
    from pytorch_lightning.strategies import FSDPStrategy
    from torch.distributed.fsdp import CPUOffload, ShardingStrategy

    layers = layer_classes(model)
    return FSDPStrategy(
        auto_wrap_policy=layers,
        activation_checkpointing_policy=layers if fsdp_cfg.activation_checkpointing else None,
        sharding_strategy=ShardingStrategy[fsdp_cfg.sharding_strategy],
        cpu_offload=CPUOffload(offload_params=True) if fsdp_cfg.cpu_offload else None,
        state_dict_type="full",
        use_orig_params=True,
    )


class Unshard(pl.Callback):
    """At the end of ``fit``, before Lightning tears the strategy down (and moves the module to the
    CPU), turn the sharded LightningModule back into a plain one holding the full weights."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        unshard_in_place(trainer.strategy.model, pl_module)


def full_state(root: nn.Module) -> Dict[str, torch.Tensor]:
    """Every parameter and buffer of an FSDP-wrapped ``root``, unsharded, on every rank (a collective)."""
    from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel as FSDP, StateDictType

    on_gpu = getattr(root, "compute_device", torch.device("cpu")).type != "cpu"
    # offloaded on GPUs: the gathered copy waits in host memory, so a GPU never holds two full copies
    config = FullStateDictConfig(offload_to_cpu=on_gpu, rank0_only=False)
    with FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT, config):
        return root.state_dict()


def unshard_in_place(root: nn.Module, module: nn.Module) -> nn.Module:
    """Gather the full weights of ``root`` (the FSDP wrapper around ``module``) and turn ``module``
    back into a plain module holding them: every FSDP unit inside it is replaced by the module it
    wraps, and every parameter gets its full tensor (``requires_grad`` kept). Call on every rank."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    state = full_state(root)
    device = getattr(root, "compute_device", None)  # where FSDP ran the shards
    _replace_units(module, FSDP)
    names = dict(module.named_parameters())
    missing = [n for n in names if n not in state]
    if missing:
        raise RuntimeError(f"FSDP's full state dict lacks {missing[:3]}; cannot unshard the model")
    for name, param in names.items():
        full = state[name]
        param.data = full.to(device or full.device, dtype=param.dtype)
    for name, buf in module.named_buffers():
        if name in state:
            buf.data = state[name].to(buf.device, dtype=buf.dtype)
    return module


def _replace_units(parent: nn.Module, fsdp_type: type) -> None:
    for name, child in list(parent.named_children()):
        inner = child
        while isinstance(inner, fsdp_type) or hasattr(inner, "_checkpoint_wrapped_module"):
            inner = inner.module if isinstance(inner, fsdp_type) else inner._checkpoint_wrapped_module
        if inner is not child:
            setattr(parent, name, inner)
        _replace_units(inner, fsdp_type)
