"""Fully sharded data parallel (``trainer=fsdp``) through Lightning's FSDPStrategy.

Training is sharded: each decoder layer (the classes the model lists in ``_no_split_modules``) is one
FSDP unit, so parameters, gradients and optimizer state are split over the ranks. What follows a
stage in ftexp (its evaluation row, the mitigation's ``after_stage``, the next stage's Trainer,
saving) expects a plain model, so after ``fit`` the full weights are gathered on every rank and the
FSDP units are replaced by the modules they wrap (:func:`unshard_in_place`). Evaluation therefore
needs the *weights* of the model to fit one device (and rank 0's host memory to hold one copy); FSDP's saving is in the optimizer state and the
gradients (a full fine-tune with AdamW needs about 16 bytes per parameter while training, 2 for
bf16 weights at evaluation).
"""

from __future__ import annotations

import gc
from typing import Any, Dict, Set, Type

import torch
from torch import nn

from ftexp.models.base import decoder_layer_classes


def layer_classes(model: nn.Module) -> Set[Type[nn.Module]]:
    """The module classes that become FSDP units: the model's own no-split list (its decoder layers)."""
    found = decoder_layer_classes(model)
    if not found:
        raise ValueError(f"trainer.strategy=fsdp: {type(model).__name__} names no layer class to shard by "
                         "(its _no_split_modules is empty); use trainer=ddp")
    return found


def mixed_precision(precision: str):
    """FSDP's mixed precision for a ``*-mixed`` trainer precision: compute in 16 bits, but keep the
    buffers (RoPE's inverse frequencies: rounded to bf16 they put the angles radians off at long
    positions) and the reduction of the gradients over the ranks in fp32, as DDP under autocast does.
    Lightning's own casts all three to 16 bits. None (Lightning's) for the other precisions."""
    from torch.distributed.fsdp import MixedPrecision

    low = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    if low is None:
        return None
    return MixedPrecision(param_dtype=low, reduce_dtype=torch.float32, buffer_dtype=torch.float32)


def strategy(fsdp_cfg: Any, model: nn.Module, precision: str):
    """Lightning's FSDPStrategy for ``model``: one unit per decoder layer, original parameters kept
    (LoRA mixes frozen and trainable ones), full state dicts in checkpoints, fp32 buffers and gradient
    reduction under mixed precision."""
    from pytorch_lightning.strategies import FSDPStrategy
    from torch.distributed.fsdp import CPUOffload, ShardingStrategy

    layers = layer_classes(model)
    return FSDPStrategy(
        mixed_precision=mixed_precision(precision),
        auto_wrap_policy=layers,
        activation_checkpointing_policy=layers if fsdp_cfg.activation_checkpointing else None,
        sharding_strategy=ShardingStrategy[fsdp_cfg.sharding_strategy],
        cpu_offload=CPUOffload(offload_params=True) if fsdp_cfg.cpu_offload else None,
        state_dict_type="full",
        use_orig_params=True,
    )


WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def clean_name(name: str) -> str:
    """A parameter's name as the unwrapped model knows it (FSDP and activation checkpointing insert
    wrapper modules into the names while the model is sharded)."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def saved_buffers(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Copies of the buffers before sharding: mixed precision casts them (RoPE's inv_freq to bf16),
    and non-persistent ones are in no state dict, so :func:`unshard_in_place` puts these back."""
    return {name: buf.detach().clone() for name, buf in module.named_buffers()}


def unshard_in_place(root: nn.Module, module: nn.Module, buffers: Dict[str, torch.Tensor]) -> nn.Module:
    """Turn ``module`` (the LightningModule that ``root``, its FSDP wrapper, shards) back into a plain
    module with the full weights, on every rank (a collective: call it on all of them).

    Rank 0 gathers the full state dict in host memory (one copy on the node, not one per rank) and
    broadcasts it tensor by tensor; every FSDP unit (and activation-checkpoint wrapper) is replaced
    by the module it wraps; every parameter gets its full tensor and loses FSDP's marks and its
    sharded gradient, so the next stage's Trainer can shard it again; buffers get back their values
    from before the stage (``buffers``, from :func:`saved_buffers`)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel as FSDP, StateDictType

    device = getattr(root, "compute_device", None) or torch.device("cpu")
    on_gpu = device.type != "cpu"
    config = FullStateDictConfig(offload_to_cpu=on_gpu, rank0_only=True)
    with FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT, config):
        state = root.state_dict()  # full on rank 0, empty elsewhere
    rank = dist.get_rank()
    shapes = [[(name, tuple(t.shape), t.dtype) for name, t in state.items()] if rank == 0 else None]
    dist.broadcast_object_list(shapes, src=0)
    _replace_units(module, FSDP)
    params = dict(module.named_parameters())
    missing = [n for n in params if n not in {name for name, _, _ in shapes[0]}]
    if missing:
        raise RuntimeError(f"FSDP's full state dict lacks {missing[:3]}; cannot unshard the model")
    for name, shape, dtype in shapes[0]:
        full = state[name].to(device) if rank == 0 else torch.empty(shape, dtype=dtype, device=device)
        dist.broadcast(full, src=0)
        if name in params:
            param = params[name]
            param.data = full.to(dtype=param.dtype)
            param.grad = None
            for attr in [a for a in vars(param) if a.startswith("_fsdp")]:
                delattr(param, attr)  # FSDP skips parameters it marked as already flattened
    for name, buf in module.named_buffers():
        if name in buffers:
            buf.data = buffers[name].to(device)
    del state
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    return module


def _replace_units(parent: nn.Module, fsdp_type: type) -> None:
    for name, child in list(parent.named_children()):
        inner = child
        while isinstance(inner, fsdp_type) or hasattr(inner, "_checkpoint_wrapped_module"):
            inner = inner.module if isinstance(inner, fsdp_type) else inner._checkpoint_wrapped_module
        if inner is not child:
            setattr(parent, name, inner)
        _replace_units(inner, fsdp_type)
