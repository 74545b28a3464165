"""Switching a model's attention implementation for one block of work."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


def attention_implementation(model: torch.nn.Module) -> str:
    return getattr(getattr(model, "config", None), "_attn_implementation", None) or "sdpa"


@contextmanager
def use_attention(model: torch.nn.Module, impl: str) -> Iterator[None]:
    """Run the block with ``impl`` attention (same maths, another kernel), then switch back.
    Models that cannot switch (or already use ``impl``) are left as they are."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    current = attention_implementation(base)
    if current == impl or not hasattr(base, "set_attn_implementation"):
        yield
        return
    base.set_attn_implementation(impl)
    try:
        yield
    finally:
        base.set_attn_implementation(current)
