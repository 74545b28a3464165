"""Switching a model's attention implementation for one block of work."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from ftexp.models.base import unwrap_adapter


def reads_position_ids(impl: str) -> bool:
    """Whether attention ``impl`` takes a flattened batch's example boundaries from position_ids:
    transformers' flash-attention paths (flash_attention_2/3/4 and hub kernels such as
    kernels-community/flash-attn2) and flex attention. sdpa and eager need a 4-D mask instead."""
    return impl == "flex_attention" or "flash" in impl.lower()


def takes_flat_batches(model: torch.nn.Module) -> bool:
    """Whether packing should give ``model`` one unpadded row per step (see ``flatten_batch``)."""
    return reads_position_ids(attention_implementation(model))


def attention_implementation(model: torch.nn.Module) -> str:
    base = unwrap_adapter(model)
    return getattr(getattr(base, "config", None), "_attn_implementation", None) or "sdpa"


@contextmanager
def use_attention(model: torch.nn.Module, impl: str) -> Iterator[None]:
    """Run the block with ``impl`` attention (same maths, another kernel), then switch back.
    Models that cannot switch (or already use ``impl``) are left as they are."""
    base = unwrap_adapter(model)
    current = attention_implementation(model)
    if current == impl or not hasattr(base, "set_attn_implementation"):
        yield
        return
    base.set_attn_implementation(impl)
    try:
        yield
    finally:
        base.set_attn_implementation(current)
